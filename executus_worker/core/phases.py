"""The run's in-memory state between checkpoints, and the phase bookkeeping on it.

A run is either one loop, or named phases run in order. Phases are resumed at boundary
granularity: a checkpoint remembers where the active phase began (``phase_start``), and a
resumed run truncates back there and re-runs that phase from its seed. Steps are not idempotent
in general, so re-running a whole phase is the only resume point we can promise is consistent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    Message,
    RunInfo,
    ToolCall,
)
from executus_worker.core.ports import Tools, ToolSpec
from executus_worker.core.toolctx import ToolContext, tool_context


@dataclass
class RunState:
    run_id: str
    epoch: int
    transcript: list[Message] = field(default_factory=list)
    iteration: int = 0
    active_phase: str | None = None
    phase_start: int = 0
    completed_phases: list[str] = field(default_factory=list)
    phase_outputs: dict[str, JsonValue] = field(default_factory=dict)
    critic_state: dict[str, JsonValue] = field(default_factory=dict)

    @classmethod
    def fresh(cls, run: RunInfo) -> RunState:
        return cls(run_id=run.run_id, epoch=run.epoch)

    @classmethod
    def from_checkpoint(cls, run: RunInfo, checkpoint: Checkpoint) -> RunState:
        return cls(
            run_id=run.run_id,
            # The checkpoint was written under an older epoch; this attempt writes under its own.
            epoch=run.epoch,
            transcript=list(checkpoint.messages),
            iteration=checkpoint.iteration,
            active_phase=checkpoint.active_phase,
            phase_start=checkpoint.phase_start,
            completed_phases=list(checkpoint.completed_phases),
            phase_outputs=dict(checkpoint.phase_outputs),
            critic_state=dict(checkpoint.critic_state),
        )

    def snapshot(self, now: float | None = None) -> Checkpoint:
        """A checkpoint of the current state.

        ``model_construct`` skips re-validating every message: the transcript holds validated,
        frozen messages already, and validating them again would make each save O(transcript).
        The list is copied (references only) so later steps never mutate a saved checkpoint.
        """
        # Every field given: model_construct then looks up no defaults (three per run).
        return Checkpoint.model_construct(
            format_version=CHECKPOINT_FORMAT_VERSION,
            run_id=self.run_id,
            epoch=self.epoch,
            iteration=self.iteration,
            messages=list(self.transcript),
            active_phase=self.active_phase,
            phase_start=self.phase_start,
            completed_phases=list(self.completed_phases),
            phase_outputs=dict(self.phase_outputs),
            critic_state=dict(self.critic_state),
            updated_at=time.time() if now is None else now,
            write_seq="",
        )

    # -- phases ------------------------------------------------------------------------

    def rewind_to_phase_start(self) -> bool:
        """Drop the interrupted phase's partial messages. True if anything was dropped.

        ``iteration`` is not rewound: it counts steps executed, re-runs included, so
        ``limits.max_iterations`` bounds the work a run does however often it is resumed.
        """
        start = min(self.phase_start, len(self.transcript))
        dropped = len(self.transcript) > start
        del self.transcript[start:]
        self.phase_start = start
        return dropped

    def begin_phase(self, phase: str) -> None:
        self.active_phase = phase
        self.phase_start = len(self.transcript)

    def end_phase(self, phase: str, output: JsonValue) -> None:
        self.completed_phases.append(phase)
        self.phase_outputs[phase] = output
        self.active_phase = None
        self.phase_start = len(self.transcript)


def check_phases(phases: Sequence[str]) -> list[str]:
    """The agent's phase list, validated: non-empty, unique names."""
    names = list(phases)
    if not names:
        raise ValueError("a phased agent must declare at least one phase")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate phase names: {duplicates}")
    return names


class Toolbox:
    """The agent's own tools plus the skills' tools, behind one dispatch.

    On a name clash the agent's tool wins: an agent author decides what their agent calls.
    Unknown names go to the agent's tools, which answer with their own error message.
    """

    def __init__(self, run: RunInfo, agent_tools: Tools, skill_tools: Tools) -> None:
        agent_specs = list(agent_tools.specs(run))
        agent_names = {spec.name for spec in agent_specs}
        skill_specs = [s for s in skill_tools.specs(run) if s.name not in agent_names]
        self.specs: tuple[ToolSpec, ...] = (*agent_specs, *skill_specs)
        self._default = agent_tools
        self._routes: dict[str, Tools] = {spec.name: skill_tools for spec in skill_specs}
        self._routes.update({name: agent_tools for name in agent_names})

    def call(self, run: RunInfo, call: ToolCall, *, iteration: int) -> Message:
        """Dispatch one call inside its ToolContext (run id, fence, idempotency key)."""
        ctx = ToolContext(
            run_id=run.run_id, fence=run.fence, epoch=run.epoch, iteration=iteration,
            call_id=call.id,
        )  # fmt: skip
        with tool_context(ctx):
            return self._routes.get(call.name, self._default).call(run, call)
