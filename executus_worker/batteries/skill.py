"""Skill battery: shared tools, offered to every agent or only to the agents that name them.

A *skill* is a named group of tools (any ``Tools`` provider: the worker builds them from plain
functions with ``models.tools.FunctionTools``). ``SkillRegistry`` is the ``Skills`` port: for a
run it offers every shared skill plus the skills its agent names -- named in the registry
(``grant``, the skills file's ``[agents]`` table) or by the agent itself (a ``skills``
attribute, read through ``named_by``). The agent's own tools win a name clash (``Toolbox``);
between two skills, the one registered first wins and the clash is logged once.

``SkillSet`` is the older, simpler battery: plain functions offered to every run.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from executus_worker.core.models import Message, RunInfo, ToolCall
from executus_worker.core.ports import Tools, ToolSpec
from executus_worker.errors import ConfigError

log = logging.getLogger(__name__)

ToolFn = Callable[..., JsonValue]


@dataclass(frozen=True)
class _Registered:
    name: str
    tools: Tools
    shared: bool


class SkillRegistry:
    """Implements ``core.ports.Skills``. Register at start-up; ``tools(run)`` is thread-safe."""

    def __init__(self, *, named_by: Callable[[RunInfo], Collection[str]] | None = None) -> None:
        self._skills: dict[str, _Registered] = {}
        self._granted: dict[str, set[str]] = {}
        self._named_by = named_by
        self._warned: set[frozenset[str]] = set()
        self._lock = threading.Lock()

    def add(self, name: str, tools: Tools, *, shared: bool = False) -> None:
        if name in self._skills:
            raise ConfigError(f"skill {name!r} is registered twice")
        self._skills[name] = _Registered(name, tools, shared)

    def grant(self, agent: str, *skills: str) -> None:
        """Offer ``skills`` to runs of ``agent`` (as if the agent named them)."""
        unknown = sorted(set(skills) - set(self._skills))
        if unknown:
            raise ConfigError(f"agent {agent!r} is granted unknown skills {unknown}")
        self._granted.setdefault(agent, set()).update(skills)

    @property
    def names(self) -> list[str]:
        return list(self._skills)

    def offered(self, run: RunInfo) -> list[str]:
        """The skills a run of this agent gets, in registration order."""
        wanted = set(self._granted.get(run.agent, ()))
        if self._named_by is not None:
            try:
                wanted.update(self._named_by(run))
            except Exception:  # a broken agent lookup costs the run its named skills only
                log.exception("run %s: reading the skills agent %s names failed",
                              run.run_id, run.agent)  # fmt: skip
        unknown = sorted(wanted - set(self._skills))
        if unknown:
            self._warn_once(frozenset(unknown), f"agent {run.agent!r} names unknown skills "
                            f"{unknown}; they are not offered")  # fmt: skip
        return [s.name for s in self._skills.values() if s.shared or s.name in wanted]

    # Skills port
    def tools(self, run: RunInfo) -> Tools:
        return _Offered(run, [self._skills[name] for name in self.offered(run)], self)

    def _warn_once(self, key: frozenset[str], message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning(message)


class _Offered:
    """The tools of the skills one run is offered, behind one dispatch."""

    def __init__(self, run: RunInfo, skills: Sequence[_Registered], owner: SkillRegistry) -> None:
        self._specs: list[ToolSpec] = []
        self._routes: dict[str, Tools] = {}
        for skill in skills:
            for spec in skill.tools.specs(run):
                if spec.name in self._routes:
                    owner._warn_once(
                        frozenset({spec.name, skill.name}),
                        f"tool {spec.name!r} of skill {skill.name!r} is shadowed by an earlier "
                        "skill's tool of the same name",
                    )
                    continue
                self._routes[spec.name] = skill.tools
                self._specs.append(spec)

    def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
        return self._specs

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        tools = self._routes.get(call.name)
        if tools is None:
            return Message(
                role="tool",
                tool_call_id=call.id,
                name=call.name,
                content=f"error: no tool named {call.name!r}",
            )
        return tools.call(run, call)


@dataclass(frozen=True)
class Skill:
    spec: ToolSpec
    fn: ToolFn


class SkillSet:
    """A named set of tools offered to every run. A failing tool becomes an error *result*
    the model can read -- one broken tool must not fail the whole run."""

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
