"""Wrappers the composition root puts around the run loop's ports: metrics and log context.

Each wraps a port the loop already calls, so nothing in ``core`` or ``checkpoint`` knows
about metrics or logs:

- ``observed_execute``: an attempt's log context (run id, epoch, attempt, agent), the active
  runs gauge, attempts started, lease losses (an attempt that ended LOST);
- ``ObservedCritic``: the critic's per-step calls time each step and set the step in the log
  context (the critic hears ``step_started``/``step_finished`` around the model and tools);
- ``TimedCheckpoints``: the latency of every checkpoint write that reached the store;
- ``observe_delivery``: what became of a delivery (status counters, duplicates dropped).

Metrics hooks are observational: one that raises is logged and ignored, never fails a run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.models import Checkpoint, Message, OutcomeKind, RunInfo, RunOutcome
from executus_worker.core.ports import (
    Agent,
    CheckpointerFactory,
    Critic,
    CriticWatch,
    Deps,
    RunCheckpointer,
)
from executus_worker.core.stop import StopToken
from executus_worker.observability import logs
from executus_worker.observability.metrics import Metrics

log = logging.getLogger(__name__)

Execute = Callable[[Agent, RunInfo, Deps, StopToken], RunOutcome]

# The statuses an attempt leaves behind (LOST is not one: the new owner decides the status).
_STATUS_FOR_OUTCOME = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.CANCELLED: "cancelled",
    OutcomeKind.INTERRUPTED: "interrupted",
}
# Deliveries that ended a run without executing it (see worker.runs.Handled.action).
_TERMINAL_ACTIONS = {"failed", "cancelled", "dead"}


def _quietly(what: str, call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:
        log.exception("metrics hook %s failed (ignored)", what)


def observed_execute(execute: Execute, metrics: Metrics) -> Execute:
    """``execute`` with the attempt's log context and its metrics around it."""

    def run(agent: Agent, info: RunInfo, deps: Deps, stop: StopToken) -> RunOutcome:
        with logs.run_context(
            info.run_id, epoch=info.epoch, attempt=info.attempt, agent=info.agent
        ):
            _quietly("run_started", lambda: metrics.run_started(agent.name))
            try:
                outcome = execute(agent, info, deps, stop)
            finally:
                _quietly("run_ended", lambda: metrics.run_ended(agent.name))
            if outcome.kind is OutcomeKind.LOST:
                _quietly("lease_lost", metrics.lease_lost)
            return outcome

    return run


class _Handled(Protocol):
    @property
    def action(self) -> str: ...

    @property
    def outcome(self) -> OutcomeKind | None: ...


def observe_delivery(handled: _Handled, metrics: Metrics) -> None:
    """Count one ``executus.run`` delivery by what became of it (per delivery: no closures)."""
    try:
        metrics.delivery(handled.action)
        if handled.action == "duplicate":
            metrics.duplicate_dropped()
        elif handled.action == "executed" and handled.outcome in _STATUS_FOR_OUTCOME:
            metrics.run_status(_STATUS_FOR_OUTCOME[handled.outcome])
        elif handled.action in _TERMINAL_ACTIONS:
            metrics.run_status(handled.action)
    except Exception:
        log.exception("metrics hook delivery failed (ignored)")


class ObservedCritic:
    """A ``Critic`` that times steps and tracks the step for logs, then defers to ``inner``."""

    def __init__(self, inner: Critic, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    def watch(self, run: RunInfo, state: dict[str, JsonValue], stop: StopToken) -> CriticWatch:
        return _ObservedWatch(self.inner.watch(run, state, stop), run.agent, self._metrics)


class _ObservedWatch:
    def __init__(self, inner: CriticWatch, agent: str, metrics: Metrics) -> None:
        self._inner = inner
        self._agent = agent
        self._metrics = metrics
        self._started: float | None = None

    def step_started(self, iteration: int) -> None:
        logs.set_step(iteration)
        self._started = time.perf_counter()
        self._inner.step_started(iteration)

    def nudges(self) -> Sequence[Message]:
        return self._inner.nudges()

    def step_finished(self, iteration: int) -> None:
        self._inner.step_finished(iteration)
        if self._started is not None:
            seconds = time.perf_counter() - self._started
            _quietly("step", lambda: self._metrics.step_finished(self._agent, seconds))
            self._started = None

    def state(self) -> dict[str, JsonValue]:
        return self._inner.state()

    def close(self) -> None:
        self._inner.close()


class TimedCheckpoints:
    """A ``CheckpointerFactory`` whose handles time each write that reached the store."""

    def __init__(self, inner: CheckpointerFactory, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    def begin(self, run: RunInfo, stop: StopToken) -> RunCheckpointer | None:
        handle = self.inner.begin(run, stop)
        return None if handle is None else _TimedCheckpointer(handle, self._metrics)


class _TimedCheckpointer:
    def __init__(self, inner: RunCheckpointer, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def _timed(self, op: str, started: float) -> None:
        seconds = time.perf_counter() - started
        _quietly("checkpoint", lambda: self._metrics.checkpoint_written(op, seconds))

    def load(self) -> Checkpoint | None:
        return self._inner.load()

    def save(self, checkpoint: Checkpoint, *, force: bool = False) -> bool:
        started = time.perf_counter()
        written = self._inner.save(checkpoint, force=force)
        if written:  # a throttled save wrote nothing: timing it would flatter the histogram
            self._timed("save", started)
        return written

    def complete(self, checkpoint: Checkpoint, output: JsonValue) -> None:
        started = time.perf_counter()
        self._inner.complete(checkpoint, output)
        self._timed("finish", started)

    def fail(self, checkpoint: Checkpoint, error: str) -> None:
        started = time.perf_counter()
        self._inner.fail(checkpoint, error)
        self._timed("finish", started)

    def cancel(self, checkpoint: Checkpoint) -> None:
        started = time.perf_counter()
        self._inner.cancel(checkpoint)
        self._timed("finish", started)

    def interrupt(self, checkpoint: Checkpoint) -> None:
        started = time.perf_counter()
        self._inner.interrupt(checkpoint)
        self._timed("interrupt", started)

    def park(self, reason: str, needs_format: int) -> None:
        started = time.perf_counter()
        self._inner.park(reason, needs_format)
        self._timed("interrupt", started)  # the same transition, with a format
