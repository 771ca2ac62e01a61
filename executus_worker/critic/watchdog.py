"""A two-tier timeout watchdog for runs: a deadline table plus a ``check(now)`` method.

Tier 1, *idle*: one step has been running longer than ``idle_timeout_s``. The escalation
policy decides: ``warn`` records it (audit + log) and lets the step go on; ``stop`` ends the run.
Tier 2, *run*: the run's active time across all its attempts passed ``run_timeout_s``. Always
stops the run: heartbeats and progress never extend it.

A stop is a CRITIC request on the run's stop token, honoured at the next step boundary (the run
ends ``failed`` with the reason). The watchdog never kills a thread: a step that hangs forever is
the model client's timeout's job, or the worker's shutdown escalation.

Tests call :meth:`TimeoutCritic.check` directly with a chosen ``now``; :meth:`start` runs it
from one daemon thread per process for production.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import JsonValue

from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Audit, CriticWatch, NullAudit
from executus_worker.core.stop import StopReason, StopToken

log = logging.getLogger(__name__)


class Escalation(enum.StrEnum):
    WARN = "warn"
    STOP = "stop"


@dataclass(frozen=True)
class TimeoutPolicy:
    idle_timeout_s: float | None = 300.0
    run_timeout_s: float | None = 3600.0
    on_idle: Escalation = Escalation.WARN


@dataclass
class _Entry:
    run: RunInfo
    stop: StopToken
    elapsed_before_s: float  # active time of earlier attempts, from the checkpoint
    attempt_started: float
    step_started: float | None = None
    step_seq: int = 0
    warned_seq: int = 0  # the step already warned about: warn once per slow step
    idle_warnings: int = 0
    done: bool = False


@dataclass
class TimeoutCritic:
    policy: TimeoutPolicy = field(default_factory=TimeoutPolicy)
    audit: Audit = field(default_factory=NullAudit)
    clock: Callable[[], float] = time.monotonic
    tick_s: float = 1.0
    _entries: dict[int, _Entry] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _halt: threading.Event = field(default_factory=threading.Event, init=False)

    def watch(self, run: RunInfo, state: dict[str, JsonValue], stop: StopToken) -> CriticWatch:
        before = state.get("elapsed_s", 0.0)  # resumed runs keep their active time
        entry = _Entry(
            run=run,
            stop=stop,
            elapsed_before_s=float(before) if isinstance(before, int | float) else 0.0,
            attempt_started=self.clock(),
        )
        with self._lock:
            self._entries[id(entry)] = entry
        return _Watch(self, entry)

    def check(self, now: float | None = None) -> None:
        """Escalate every watched run whose deadline has passed."""
        now = self.clock() if now is None else now
        with self._lock:
            entries = [e for e in self._entries.values() if not e.done]
        for entry in entries:
            self._check_one(entry, now)

    def _check_one(self, entry: _Entry, now: float) -> None:
        policy = self.policy
        active_s = entry.elapsed_before_s + (now - entry.attempt_started)
        if policy.run_timeout_s is not None and active_s > policy.run_timeout_s:
            self._stop(entry, f"run exceeded run_timeout_s={policy.run_timeout_s:g}")
            return
        started = entry.step_started
        if policy.idle_timeout_s is None or started is None:
            return
        if now - started <= policy.idle_timeout_s:
            return
        detail = f"step running longer than idle_timeout_s={policy.idle_timeout_s:g}"
        if policy.on_idle is Escalation.STOP:
            self._stop(entry, detail)
        elif entry.warned_seq != entry.step_seq:
            entry.warned_seq = entry.step_seq
            entry.idle_warnings += 1
            log.warning("run %s: %s", entry.run.run_id, detail)
            self.audit.record(entry.run, "critic_warning", {"detail": detail})

    def _stop(self, entry: _Entry, detail: str) -> None:
        entry.done = True
        log.warning("run %s stopped by critic: %s", entry.run.run_id, detail)
        self.audit.record(entry.run, "critic_stop", {"detail": detail})
        entry.stop.request(StopReason.CRITIC, detail)

    def _forget(self, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(id(entry), None)

    # -- production driver -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="executus-critic", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._halt.wait(self.tick_s):
            try:
                self.check()
            except Exception:  # one bad entry must not kill the watchdog for every run
                log.exception("critic check failed")


class _Watch:
    def __init__(self, critic: TimeoutCritic, entry: _Entry) -> None:
        self._critic = critic
        self._entry = entry

    def step_started(self, iteration: int) -> None:
        self._entry.step_seq += 1
        self._entry.step_started = self._critic.clock()

    def step_finished(self, iteration: int) -> None:
        self._entry.step_started = None

    def state(self) -> dict[str, JsonValue]:
        entry = self._entry
        elapsed = entry.elapsed_before_s + (self._critic.clock() - entry.attempt_started)
        return {"elapsed_s": round(elapsed, 3), "idle_warnings": entry.idle_warnings}

    def close(self) -> None:
        self._critic._forget(self._entry)
