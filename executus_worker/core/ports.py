"""Ports: the small interfaces the run loop talks to, each with its do-nothing default beside it.

An unconfigured battery is a null object, so the loop never writes ``if audit is not None``.
Implementations live elsewhere (``checkpoint``, ``critic``, ``batteries``); the loop imports
only this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.models import Checkpoint, Message, RunInfo, ToolCall
from executus_worker.core.stop import StopToken

# --------------------------------------------------------------------------- model and tools


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRequest:
    run: RunInfo
    phase: str | None
    messages: Sequence[Message]
    tools: Sequence[ToolSpec]
    system_prompt: str | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ModelReply:
    """One model step. ``done`` ends the loop (or the phase) with ``output``."""

    message: Message | None
    done: bool = False
    output: JsonValue = None
    usage: Usage = field(default_factory=Usage)


class Model(Protocol):
    def complete(self, request: ModelRequest) -> ModelReply: ...


class Tools(Protocol):
    def specs(self, run: RunInfo) -> Sequence[ToolSpec]: ...

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        """Run one tool call and return its result as a ``tool`` message."""
        ...


class NoTools:
    def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
        return ()

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        return Message(
            role="tool",
            tool_call_id=call.id,
            name=call.name,
            content=f"error: no tool named {call.name!r}",
        )


# --------------------------------------------------------------------------- agent


class Agent(Protocol):
    """What a registered agent provides to the loop."""

    name: str

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        """Phase names in order, or None for a single loop."""
        ...

    def model(self, run: RunInfo) -> Model: ...

    def tools(self, run: RunInfo) -> Tools: ...

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        """Messages appended when a fresh run (or phase) starts; nothing on mid-loop resume."""
        ...


# --------------------------------------------------------------------------- checkpointing


class RunCheckpointer(Protocol):
    """Per-run, per-attempt checkpoint handle, bound to the attempt's epoch.

    An attempt that never loaded the stored checkpoint (its ``load`` raised) holds nothing that
    could replace it, so it never writes over it or deletes it: ``interrupt`` only releases the
    lease, and ``fail``/``cancel`` record the ending with the stored checkpoint kept as it is.
    """

    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint, *, force: bool = False) -> bool:
        """Persist (maybe throttled). True if written. Raises OwnershipLost on a stale epoch."""
        ...

    def complete(self, checkpoint: Checkpoint, output: JsonValue) -> None:
        """Delete the checkpoint; keep status, output and final transcript for the retention."""
        ...

    def fail(self, checkpoint: Checkpoint, error: str) -> None:
        """Delete the checkpoint; record the error (and the transcript) for the retention."""
        ...

    def cancel(self, checkpoint: Checkpoint) -> None:
        """Delete the checkpoint; record status cancelled."""
        ...

    def interrupt(self, checkpoint: Checkpoint) -> None:
        """Force-flush, release the lease and mark the run interrupted; keep the checkpoint."""
        ...

    def park(self, reason: str, needs_format: int) -> None:
        """The stored checkpoint is of a newer format (``needs_format``) than this code reads:
        release the lease and leave the run, checkpoint untouched, for a worker that reads it."""
        ...


class CheckpointerFactory(Protocol):
    def begin(self, run: RunInfo, stop: StopToken) -> RunCheckpointer | None:
        """A handle for a durable run, or None for a run that is not checkpointed."""
        ...


class NullCheckpointer:
    """A non-durable run: nothing is stored, nothing is resumed."""

    def load(self) -> Checkpoint | None:
        return None

    def save(self, checkpoint: Checkpoint, *, force: bool = False) -> bool:
        return False

    def complete(self, checkpoint: Checkpoint, output: JsonValue) -> None:
        return None

    def fail(self, checkpoint: Checkpoint, error: str) -> None:
        return None

    def cancel(self, checkpoint: Checkpoint) -> None:
        return None

    def interrupt(self, checkpoint: Checkpoint) -> None:
        return None

    def park(self, reason: str, needs_format: int) -> None:
        return None


class NoCheckpoints:
    def begin(self, run: RunInfo, stop: StopToken) -> RunCheckpointer | None:
        return None


# --------------------------------------------------------------------------- batteries


class Audit(Protocol):
    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None: ...


@dataclass(frozen=True)
class AuditEvent:
    """One run event as an audit sink stores it (``checkpoint.events`` writes these)."""

    run_id: str
    event: str
    ts: float
    data: dict[str, JsonValue]


class NullAudit:
    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        return None


class Budget(Protocol):
    """Raises ``core.stop.BudgetExceeded`` to end a run; any other error is logged and ignored."""

    def check(self, run: RunInfo) -> None:
        """Before a model call: stop a run whose budget is already spent."""
        ...

    def charge(self, run: RunInfo, usage: Usage) -> None:
        """Account for a model step (its usage, whatever the step does next)."""
        ...


class NullBudget:
    def check(self, run: RunInfo) -> None:
        return None

    def charge(self, run: RunInfo, usage: Usage) -> None:
        return None


class Persona(Protocol):
    def system_prompt(self, run: RunInfo) -> str | None: ...


class NullPersona:
    def system_prompt(self, run: RunInfo) -> str | None:
        return None


class Skills(Protocol):
    """Extra tools offered to every run on top of the agent's own."""

    def tools(self, run: RunInfo) -> Tools: ...


class NullSkills:
    def tools(self, run: RunInfo) -> Tools:
        return NoTools()


class CriticWatch(Protocol):
    """The critic's per-run watch. It stops a run by requesting CRITIC on its stop token."""

    def step_started(self, iteration: int) -> None: ...

    def nudges(self) -> Sequence[Message]:
        """Messages for the step about to call the model (a request to wrap up). They stay
        pending, and in ``state()``, until that step finishes: a resumed run gets them again."""
        ...

    def step_finished(self, iteration: int) -> None: ...

    def state(self) -> dict[str, JsonValue]: ...

    def close(self) -> None: ...


class Critic(Protocol):
    def watch(self, run: RunInfo, state: dict[str, JsonValue], stop: StopToken) -> CriticWatch:
        """Start watching a run; ``state`` is the critic state from the checkpoint."""
        ...


class NullWatch:
    def step_started(self, iteration: int) -> None:
        return None

    def nudges(self) -> Sequence[Message]:
        return ()

    def step_finished(self, iteration: int) -> None:
        return None

    def state(self) -> dict[str, JsonValue]:
        return {}

    def close(self) -> None:
        return None


class NullCritic:
    def watch(self, run: RunInfo, state: dict[str, JsonValue], stop: StopToken) -> CriticWatch:
        return NullWatch()


class StepObserver(Protocol):
    def on_step(self, run: RunInfo, iteration: int, new_messages: Sequence[Message]) -> None: ...


class NullObserver:
    def on_step(self, run: RunInfo, iteration: int, new_messages: Sequence[Message]) -> None:
        return None


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Deps:
    """Everything the run loop needs besides the agent; every field has a null default."""

    checkpoints: CheckpointerFactory = field(default_factory=NoCheckpoints)
    audit: Audit = field(default_factory=NullAudit)
    budget: Budget = field(default_factory=NullBudget)
    persona: Persona = field(default_factory=NullPersona)
    skills: Skills = field(default_factory=NullSkills)
    critic: Critic = field(default_factory=NullCritic)
    observer: StepObserver = field(default_factory=NullObserver)
    clock: Clock = field(default_factory=SystemClock)
