"""The critic: a per-run, two-tier runtime watchdog -- a deadline table plus ``check(now)``.

Every watched run has a *runtime budget* (active seconds across all its attempts; from the
request's ``executus.runtime_s``, else the agent's ``runtime_s``, else the critic's default):

- Tier 1, the **soft deadline**, starts at the budget. When the run's runtime passes it (a
  *stall*), the escalation policy decides: Nudge, ExtendBy or Kill (``policy.py``). Each stall
  is decided once. A policy that raises or answers nonsense is logged; the run keeps its
  deadline (the policy is asked again at the next check) and every other run stays watched.
- Tier 2, the **hard backstop**, at ``backstop_mul`` x the budget (> 1: it multiplies the
  run's whole runtime, not a step). No policy can move it. The run is killed, and a step still
  running is cut short: ``interrupt`` (from the worker: billiard's soft-time-limit signal in a
  prefork child) raises into the blocked call every check until the step ends.

A kill requests CRITIC on the run's stop token: the run ends at its next step boundary (or at
once, when interrupted) ``failed`` with ``critic_kill: <reason>``, a terminal status that
recovery never touches. Kills are sticky: once killed, no later decision extends the run, and
a killed run that is somehow resumed is killed again at its first check.

The state that must survive a resume -- runtime, deadline, stalls, decisions, undelivered
nudges, the kill -- is the watch's ``state()``, which the executor stores in the checkpoint.

Tests call :meth:`TimeoutCritic.check` with a chosen ``now`` and a fake clock; :meth:`start`
runs it from one daemon thread per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from executus_worker.core.limits import RUNTIME_S, metadata_limit
from executus_worker.core.models import Message, RunInfo
from executus_worker.core.ports import Audit, CriticWatch, NullAudit, NullWatch
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.critic.policy import EscalationPolicy, ExtendOnce, Stall, resolve
from executus_worker.critic.runstate import CriticState

log = logging.getLogger(__name__)

# The agent's next step sees nudges as a user message with this name.
NUDGE_NAME = "critic"


def _no_agent_budget(run: RunInfo) -> float | None:
    return None


@dataclass
class _Entry:
    run: RunInfo
    stop: StopToken
    thread_id: int  # the run's thread: the one a backstop interrupt targets
    budget_s: float
    backstop_s: float
    state: CriticState
    attempt_started: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    step_running: bool = False
    in_flight: int = 0  # nudges handed to the running step
    hard_fired: bool = False
    policy_failures: int = 0

    def runtime(self, now: float) -> float:
        return self.state.elapsed_s + max(0.0, now - self.attempt_started)


@dataclass
class TimeoutCritic:
    """Implements ``core.ports.Critic``. ``runtime_s`` None: only runs whose request or agent
    names a budget are watched."""

    policy: EscalationPolicy = field(default_factory=ExtendOnce)
    runtime_s: float | None = None
    backstop_mul: float = 2.0
    agent_runtime_s: Callable[[RunInfo], float | None] = _no_agent_budget
    audit: Audit = field(default_factory=NullAudit)
    interrupt: Callable[[int], bool] | None = None
    clock: Callable[[], float] = time.monotonic
    tick_s: float = 1.0
    _entries: dict[int, _Entry] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _halt: threading.Event = field(default_factory=threading.Event, init=False)

    def __post_init__(self) -> None:
        if not self.backstop_mul > 1:
            raise ValueError(
                f"backstop_mul must be > 1 (it multiplies the run's runtime budget), "
                f"got {self.backstop_mul}"
            )
        if self.runtime_s is not None and not self.runtime_s > 0:
            raise ValueError(f"runtime_s must be positive, got {self.runtime_s}")

    # -- the Critic port -------------------------------------------------------------

    def budget_for(self, run: RunInfo) -> float | None:
        """The run's runtime budget: request, then agent, then this critic's default."""
        from_request = metadata_limit(run.metadata, RUNTIME_S)
        if from_request is not None:
            return from_request
        try:
            from_agent = self.agent_runtime_s(run)
        except Exception:
            log.exception("run %s: reading the agent's runtime budget failed", run.run_id)
            from_agent = None
        if from_agent is not None and from_agent > 0:
            return float(from_agent)
        return self.runtime_s

    def watch(self, run: RunInfo, state: dict[str, JsonValue], stop: StopToken) -> CriticWatch:
        budget = self.budget_for(run)
        if budget is None:
            return NullWatch()  # nothing limits this run: nothing to watch
        restored = CriticState.restore(run.run_id, state)
        restored.budget_s = budget
        if not restored.deadline_set:
            restored.deadline_s = budget
            restored.deadline_set = True
        entry = _Entry(
            run=run,
            stop=stop,
            thread_id=threading.get_ident(),
            budget_s=budget,
            backstop_s=budget * self.backstop_mul,
            state=restored,
            attempt_started=self.clock(),
        )
        if restored.killed is not None:
            # Sticky across attempts: whatever brought a killed run back, it ends again.
            stop.request(StopReason.CRITIC, restored.killed)
        with self._lock:
            self._entries[id(entry)] = entry
        return _Watch(self, entry)

    # -- checking --------------------------------------------------------------------

    def check(self, now: float | None = None) -> None:
        """Escalate every watched run whose deadline has passed."""
        now = self.clock() if now is None else now
        with self._lock:
            entries = list(self._entries.values())
        for entry in entries:
            try:
                self._check_one(entry, now)
            except Exception:  # one run's trouble must not leave the others unwatched
                log.exception("critic check failed for run %s", entry.run.run_id)

    def _check_one(self, entry: _Entry, now: float) -> None:
        runtime = entry.runtime(now)
        if runtime >= entry.backstop_s:
            if not entry.hard_fired:
                entry.hard_fired = True
                reason = (
                    f"runtime {runtime:.1f}s reached the backstop {entry.backstop_s:g}s "
                    f"({self.backstop_mul:g} x its {entry.budget_s:g}s budget)"
                )
                self._kill(entry, reason, runtime, tier="backstop")
            self._interrupt(entry)
            return
        state = entry.state
        if state.killed is not None or state.deadline_s is None or runtime < state.deadline_s:
            return
        self._escalate(entry, runtime, state.deadline_s)

    def _escalate(self, entry: _Entry, runtime: float, deadline: float) -> None:
        state = entry.state
        stall = Stall(
            run=entry.run,
            runtime_s=runtime,
            deadline_s=deadline,
            budget_s=entry.budget_s,
            backstop_s=entry.backstop_s,
            stalls=state.stalls + 1,
            fired=tuple(state.fired),
        )
        try:
            resolved = resolve(self.policy.decide(stall))
        except Exception as exc:
            # Contained: this run keeps its current deadline (asked again next check); the
            # traceback is logged once per run, not once per tick.
            entry.policy_failures += 1
            if entry.policy_failures == 1:
                log.exception("run %s: escalation policy failed (run keeps its deadline)",
                              entry.run.run_id)  # fmt: skip
                self._record(entry, {"decision": "policy_error", "error": f"{exc!r}"[:500]})
            return
        with entry.lock:
            state.stalls += 1
            state.fired.extend(resolved.fired)
            if resolved.kill is None:
                state.nudges.extend(resolved.nudges)
                state.deadline_s = (
                    max(deadline, runtime) + resolved.extend_s
                    if resolved.extend_s is not None
                    else None  # answered without an extension: only the backstop is left
                )
        if resolved.kill is not None:
            self._kill(entry, resolved.kill, runtime, tier="soft")
            return
        log.warning(
            "run %s passed its soft deadline %.1fs: %s", entry.run.run_id, deadline,
            ", ".join(resolved.fired),
        )  # fmt: skip
        for name in resolved.fired:
            data: dict[str, JsonValue] = {"decision": name, "runtime_s": round(runtime, 3)}
            if name == "extend":
                data["deadline_s"] = state.deadline_s
            else:
                data["messages"] = list(resolved.nudges)
            self._record(entry, data)

    def _kill(self, entry: _Entry, reason: str, runtime: float, *, tier: str) -> None:
        with entry.lock:
            first = entry.state.killed is None
            if first:
                entry.state.killed = reason
                if "kill" not in entry.state.fired:
                    entry.state.fired.append("kill")
        entry.stop.request(StopReason.CRITIC, entry.state.killed or reason)
        if first or tier == "backstop":
            log.warning("run %s killed by the critic (%s): %s", entry.run.run_id, tier, reason)
            self._record(
                entry,
                {"decision": "kill", "tier": tier, "reason": reason,
                 "runtime_s": round(runtime, 3)},
            )  # fmt: skip

    def _interrupt(self, entry: _Entry) -> None:
        if self.interrupt is None:
            return
        # Under the entry lock, so the step cannot finish between the look and the signal:
        # the exception lands inside the step, never in the bookkeeping after it.
        with entry.lock:
            if not entry.step_running:
                return
            try:
                sent = self.interrupt(entry.thread_id)
            except Exception:
                log.exception("run %s: interrupting the stuck step failed", entry.run.run_id)
                return
        if sent:
            log.warning("run %s: step still running past the backstop, interrupted",
                        entry.run.run_id)  # fmt: skip

    def _record(self, entry: _Entry, data: dict[str, JsonValue]) -> None:
        try:
            self.audit.record(entry.run, "critic", data)
        except Exception:
            log.exception("audit failed for run %s (ignored)", entry.run.run_id)

    def _forget(self, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(id(entry), None)

    def watched(self) -> int:
        with self._lock:
            return len(self._entries)

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
            except Exception:  # never let the watchdog die: every run depends on it
                log.exception("critic check failed")


class _Watch:
    """Implements ``core.ports.CriticWatch`` for one attempt of one run."""

    def __init__(self, critic: TimeoutCritic, entry: _Entry) -> None:
        self._critic = critic
        self._entry = entry

    def step_started(self, iteration: int) -> None:
        with self._entry.lock:
            self._entry.step_running = True
            self._entry.in_flight = 0

    def nudges(self) -> Sequence[Message]:
        entry = self._entry
        with entry.lock:
            entry.in_flight = len(entry.state.nudges)
            texts = list(entry.state.nudges)
        return [Message(role="user", name=NUDGE_NAME, content=text) for text in texts]

    def step_finished(self, iteration: int) -> None:
        entry = self._entry
        with entry.lock:
            entry.step_running = False
            # Delivered: the step that carried them is whole and joins the transcript.
            del entry.state.nudges[: entry.in_flight]
            entry.in_flight = 0

    def state(self) -> dict[str, JsonValue]:
        entry = self._entry
        with entry.lock:
            snapshot = CriticState(
                elapsed_s=entry.runtime(self._critic.clock()),
                budget_s=entry.budget_s,
                deadline_s=entry.state.deadline_s,
                stalls=entry.state.stalls,
                fired=list(entry.state.fired),
                nudges=list(entry.state.nudges),
                killed=entry.state.killed,
            )
        return snapshot.dump()

    def close(self) -> None:
        self._critic._forget(self._entry)
