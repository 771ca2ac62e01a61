"""The built-in deterministic demo agents, ``demo.counter`` and ``demo.phased`` (no network).

Their model derives the next step from the transcript, never from process memory: that is what
makes the final transcript exact however often a run is interrupted and resumed. Each step
"thinks" for ``step_s`` seconds on the injected clock, so tests can use a fake clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from executus_worker.core.models import Message, RunInfo
from executus_worker.core.ports import (
    Clock,
    Model,
    ModelReply,
    ModelRequest,
    NoTools,
    SystemClock,
    Tools,
    Usage,
)
from executus_worker.core.scripted import ScriptedModel, say
from executus_worker.errors import PayloadError

COUNTER = "demo.counter"
PHASED = "demo.phased"

_STEP = re.compile(r"^step \d+$")
PhaseName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]


class CounterInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(default=5, ge=1, le=100_000)
    step_s: float = Field(default=0.0, ge=0, le=3600)


class PhasedInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    phases: list[PhaseName] = Field(
        default_factory=lambda: ["plan", "work", "report"], min_length=1, max_length=100
    )
    steps: int = Field(default=2, ge=1, le=100_000)
    step_s: float = Field(default=0.0, ge=0, le=3600)

    @field_validator("phases")
    @classmethod
    def _unique(cls, phases: list[str]) -> list[str]:
        if len(set(phases)) != len(phases):
            raise ValueError("phase names must be unique")
        return phases


_Input = TypeVar("_Input", bound=BaseModel)


def parse_input(agent: str, schema: type[_Input], run: RunInfo) -> _Input:
    """The run's input validated against the agent's schema; PayloadError names what is wrong."""
    try:
        return schema.model_validate(run.input)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise PayloadError(f"invalid input for {agent}: {problems}") from exc


def _usage(request: ModelRequest) -> Usage:
    # Deterministic pretend token counts, so budget and audit batteries have something to see.
    return Usage(input_tokens=10 + len(request.messages), output_tokens=3)


class CounterAgent:
    """``step i`` for i = 1..N, then output ``done N``."""

    name = COUNTER

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return None

    def model(self, run: RunInfo) -> Model:
        config = parse_input(self.name, CounterInput, run)

        def reply(request: ModelRequest) -> ModelReply:
            done_steps = sum(
                1 for m in request.messages if m.role == "assistant" and _STEP.match(m.content)
            )
            i = done_steps + 1
            if config.step_s > 0:  # no-op runs (bench) skip the syscall
                self._clock.sleep(config.step_s)
            finished = i >= config.steps
            output = f"done {config.steps}" if finished else None
            return say(f"step {i}", done=finished, output=output, usage=_usage(request))

        return ScriptedModel(reply)

    def tools(self, run: RunInfo) -> Tools:
        return NoTools()

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        # No seed message: the final transcript is exactly ``step 1 … step N``.
        return ()


class PhasedAgent:
    """K steps per phase (``<phase> step j``); each phase outputs ``<phase> done``."""

    name = PHASED

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return parse_input(self.name, PhasedInput, run).phases

    def model(self, run: RunInfo) -> Model:
        config = parse_input(self.name, PhasedInput, run)

        def reply(request: ModelRequest) -> ModelReply:
            phase = request.phase or config.phases[0]
            prefix = f"{phase} step "
            done_steps = sum(
                1
                for m in request.messages
                if m.role == "assistant" and m.content.startswith(prefix)
            )
            j = done_steps + 1
            if config.step_s > 0:  # no-op runs (bench) skip the syscall
                self._clock.sleep(config.step_s)
            finished = j >= config.steps
            output = f"{phase} done" if finished else None
            return say(f"{prefix}{j}", done=finished, output=output, usage=_usage(request))

        return ScriptedModel(reply)

    def tools(self, run: RunInfo) -> Tools:
        return NoTools()

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        return ()


def builtin_agents(clock: Clock | None = None) -> list[CounterAgent | PhasedAgent]:
    return [CounterAgent(clock), PhasedAgent(clock)]
