"""Tiny in-test fakes for the kernel's ports: a checkpointer that records every call.

``FakeStore`` outlives attempts (like Redis does), so a second ``execute`` resumes from what
the first one left. Every saved checkpoint is re-validated, because the executor builds them
with ``model_construct``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from executus_worker.core.models import Checkpoint, Message, RunInfo
from executus_worker.core.ports import (
    CriticWatch,
    Deps,
    ModelReply,
    ModelRequest,
)
from executus_worker.core.stop import StopReason, StopToken


@dataclass
class FakeStore:
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    finals: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    def transcript(self, run_id: str) -> list[str]:
        if run_id in self.finals:
            return [m.content for m in self.finals[run_id]["messages"]]
        return [m.content for m in self.checkpoints[run_id].messages]


def _copy(checkpoint: Checkpoint) -> Checkpoint:
    return Checkpoint.model_validate(checkpoint.model_dump(mode="json"))


class FakeCheckpointer:
    def __init__(
        self,
        store: FakeStore,
        run: RunInfo,
        *,
        save_error: Callable[[int], BaseException | None] = lambda n: None,
        finalize_error: BaseException | None = None,
    ) -> None:
        self.store, self.run = store, run
        self.saves = 0
        self.save_error = save_error
        self.finalize_error = finalize_error

    def load(self) -> Checkpoint | None:
        self.store.calls.append(("load",))
        found = self.store.checkpoints.get(self.run.run_id)
        return None if found is None else _copy(found)

    def save(self, checkpoint: Checkpoint, *, force: bool = False) -> bool:
        self.saves += 1
        error = self.save_error(self.saves)
        if error is not None:
            raise error
        self.store.calls.append(("save", checkpoint.iteration, force))
        self.store.checkpoints[self.run.run_id] = _copy(checkpoint)
        return True

    def _final(self, status: str, checkpoint: Checkpoint, **extra: Any) -> None:
        if self.finalize_error is not None:
            raise self.finalize_error
        copy = _copy(checkpoint)
        self.store.calls.append((status, copy.iteration, *extra.values()))
        self.store.finals[self.run.run_id] = {
            "status": status,
            "messages": copy.messages,
            "checkpoint": copy,
            **extra,
        }
        self.store.checkpoints.pop(self.run.run_id, None)

    def complete(self, checkpoint: Checkpoint, output: JsonValue) -> None:
        self._final("complete", checkpoint, output=output)

    def fail(self, checkpoint: Checkpoint, error: str) -> None:
        self._final("fail", checkpoint, error=error)

    def cancel(self, checkpoint: Checkpoint) -> None:
        self._final("cancel", checkpoint)

    def interrupt(self, checkpoint: Checkpoint) -> None:
        if self.finalize_error is not None:
            raise self.finalize_error
        copy = _copy(checkpoint)
        self.store.calls.append(("interrupt", copy.iteration))
        self.store.checkpoints[self.run.run_id] = copy

    def park(self, reason: str, needs_format: int) -> None:
        if self.finalize_error is not None:
            raise self.finalize_error
        self.store.calls.append(("park", needs_format, reason))


@dataclass
class FakeCheckpoints:
    store: FakeStore = field(default_factory=FakeStore)
    options: dict[str, Any] = field(default_factory=dict)

    def begin(self, run: RunInfo, stop: StopToken | None = None) -> FakeCheckpointer:
        return FakeCheckpointer(self.store, run, **self.options)


def run_info(agent: str = "test.agent", run_id: str = "run-1", **kw: Any) -> RunInfo:
    return RunInfo(run_id=run_id, agent=agent, epoch=kw.pop("epoch", 1), **kw)


class StopAfter:
    """A step observer that requests ``reason`` on the token once ``iteration`` is reached."""

    def __init__(self, token: StopToken, iteration: int, reason: StopReason) -> None:
        self.token, self.iteration, self.reason = token, iteration, reason
        self.seen: list[tuple[int, tuple[str, ...]]] = []

    def on_step(self, run: RunInfo, iteration: int, new_messages: Sequence[Message]) -> None:
        self.seen.append((iteration, tuple(m.content for m in new_messages)))
        if iteration >= self.iteration:
            self.token.request(self.reason, f"after step {iteration}")


@dataclass
class RecordingAudit:
    events: list[tuple[str, dict[str, JsonValue]]] = field(default_factory=list)

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        self.events.append((event, data))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


class RecordingWatch:
    def __init__(self, state: dict[str, JsonValue], stop: StopToken, kill_at: int | None) -> None:
        self.initial = dict(state)
        self.stop, self.kill_at = stop, kill_at
        self.events: list[tuple[str, int]] = []
        self.closed = False
        steps = state.get("steps", 0)
        self.steps = steps if isinstance(steps, int) else 0

    def step_started(self, iteration: int) -> None:
        self.events.append(("started", iteration))

    def nudges(self) -> Sequence[Message]:
        return ()

    def step_finished(self, iteration: int) -> None:
        self.events.append(("finished", iteration))
        self.steps += 1
        if self.kill_at is not None and iteration >= self.kill_at:
            self.stop.request(StopReason.CRITIC, f"step {iteration} overran its 5s budget")

    def state(self) -> dict[str, JsonValue]:
        return {"steps": self.steps}

    def close(self) -> None:
        self.closed = True


@dataclass
class RecordingCritic:
    kill_at: int | None = None
    watches: list[RecordingWatch] = field(default_factory=list)

    def watch(self, run: RunInfo, state: dict[str, JsonValue], stop: StopToken) -> CriticWatch:
        watch = RecordingWatch(state, stop, self.kill_at)
        self.watches.append(watch)
        return watch


def deps(checkpoints: FakeCheckpoints | None = None, **kw: Any) -> Deps:
    return Deps(checkpoints=checkpoints or FakeCheckpoints(), **kw)


def raising_model(
    inner: Callable[[ModelRequest], ModelReply], at_call: int, make: Callable[[], BaseException]
) -> Callable[[ModelRequest], ModelReply]:
    """A model function that raises ``make()`` on call ``at_call`` (1-based)."""
    calls = [0]

    def reply(request: ModelRequest) -> ModelReply:
        calls[0] += 1
        if calls[0] == at_call:
            raise make()
        return inner(request)

    return reply


class FakeClock:
    """A clock whose sleep only advances time: demo steps cost nothing in tests."""

    def __init__(self) -> None:
        self.t = 1_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
