"""Skill battery: plain Python functions offered to every run as tools. Default: none."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from executus_worker.core.models import Message, RunInfo, ToolCall
from executus_worker.core.ports import Tools, ToolSpec

log = logging.getLogger(__name__)

ToolFn = Callable[..., JsonValue]


@dataclass(frozen=True)
class Skill:
    spec: ToolSpec
    fn: ToolFn


class SkillSet:
    """A named set of tools. A failing tool becomes an error *result* the model can read --
    one broken tool must not fail the whole run."""

    def __init__(self, skills: Sequence[Skill] = ()) -> None:
        self._skills = {s.spec.name: s for s in skills}

    def add(
        self,
        name: str,
        fn: ToolFn,
        description: str = "",
        parameters: dict[str, JsonValue] | None = None,
    ) -> None:
        self._skills[name] = Skill(ToolSpec(name, description, parameters or {}), fn)

    # Skills port
    def tools(self, run: RunInfo) -> Tools:
        return self

    # Tools port
    def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
        return [s.spec for s in self._skills.values()]

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        skill = self._skills.get(call.name)
        if skill is None:
            content = f"error: no tool named {call.name!r}"
        else:
            try:
                result = skill.fn(**call.arguments)
                content = result if isinstance(result, str) else json.dumps(result)
            except Exception as exc:  # reported to the model, logged for the operator
                log.warning("run %s: tool %s failed: %s", run.run_id, call.name, exc)
                content = f"error: {type(exc).__name__}: {exc}"
        return Message(role="tool", tool_call_id=call.id, name=call.name, content=content)
