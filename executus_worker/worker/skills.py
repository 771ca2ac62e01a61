"""The skills file (``EXECUTUS_SKILLS_FILE``): shared tools for the skill battery.

    [skills.clock]                      # a skill: a named group of tools
    tools = ["my_pkg.tools:now"]        # plain functions by import path (models/tools.py)
    shared = true                       # offered to every agent (default: only to those that
                                        # name it)
    timeout_s = 5                       # optional: default EXECUTUS_TOOL_TIMEOUT_S

    [skills.search]
    tools = ["my_pkg.search:web_search", "my_pkg.search:fetch_page"]

    [agents]                            # which agents get which non-shared skills
    "support.triage" = ["search"]

An agent object may also name skills itself with a ``skills`` attribute (a list of names).
Every problem is a ConfigError naming the file, the skill or agent, and what is wrong: a bad
file stops ``executus-worker worker`` before Celery starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from executus_worker.batteries.skill import SkillRegistry
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.models import RunInfo
from executus_worker.errors import ConfigError
from executus_worker.models.tools import FunctionTools, as_tool
from executus_worker.settings import Settings
from executus_worker.worker.targets import load_target

SkillName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
ToolPath = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Skill(_Strict):
    tools: list[ToolPath] = Field(min_length=1)
    shared: bool = False
    timeout_s: float | None = Field(default=None, gt=0)


class _File(_Strict):
    skills: dict[SkillName, _Skill] = Field(default_factory=dict)
    agents: dict[str, list[SkillName]] = Field(default_factory=dict)


def load_skills(
    path: Path, settings: Settings, registry: AgentRegistry | None = None
) -> SkillRegistry:
    where = f"skills file {path}"
    try:
        parsed = _File.model_validate(tomllib.loads(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(part) for part in err["loc"])
        raise ConfigError(f"{where}: {loc}: {err['msg']}") from exc
    skills = SkillRegistry(named_by=agent_skills(registry) if registry is not None else None)
    for name, entry in parsed.skills.items():
        try:
            functions = [as_tool(load_target(target, f"skill {name!r}")) for target in entry.tools]
            tools = FunctionTools(functions, timeout_s=entry.timeout_s or settings.tool_timeout_s)
        except ConfigError as exc:
            raise ConfigError(f"{where}: skill {name!r}: {exc}") from exc
        skills.add(name, tools, shared=entry.shared)
    for agent, names in parsed.agents.items():
        try:
            skills.grant(agent, *names)
        except ConfigError as exc:
            raise ConfigError(f"{where}: [agents] {exc}") from exc
    return skills


def agent_skills(registry: AgentRegistry) -> Callable[[RunInfo], Collection[str]]:
    """The skills an agent names itself: an optional ``skills`` attribute (names)."""

    def named_by(run: RunInfo) -> Collection[str]:
        names = getattr(registry.get(run.agent), "skills", ())
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"agent {run.agent!r}: skills must be a list of skill names")
        return tuple(names)

    return named_by
