"""The agent registry: name -> Agent, with the built-ins and an optional agents file.

The agents file (``EXECUTUS_AGENTS_FILE``) maps names to factories, or declares agents as
tables (model, system prompt, tools, phases: see ``executus_worker.models.declarative``)::

    [agents]
    "my.agent" = "my_package.agents:make_agent"

    [agents."my.declared"]
    system_prompt = "You are ..."

A declared agent needs a model adapter, which core may not import: whoever loads the file
passes ``declared``, the function that validates a table and returns the agent's factory (the
worker passes the models package's). Without one a table is a ConfigError.

Loading is explicit (``load_file``) and the file is checked whole when loaded, but a factory's
module is imported only when its agent is first asked for: a worker that never runs an agent
never pays for (or breaks on) its imports. ``load_all`` imports everything, for ``check``.
"""

from __future__ import annotations

import functools
import importlib
import re
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from executus_worker.core.demo_agents import builtin_agents
from executus_worker.core.outcome import describe
from executus_worker.core.ports import Agent, Clock
from executus_worker.errors import ConfigError, UnknownAgentError

_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,120}$")  # AgentName in core.models
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_AGENT_METHODS = ("phases", "model", "tools", "seed")

AgentFactory = Callable[[], Agent]
# (name, the entry's table, source file) -> the agent's factory; raises ConfigError for a bad
# table, naming the file and the entry.
DeclaredAgents = Callable[[str, Mapping[str, Any], str], AgentFactory]


class AgentRegistry:
    """Thread-safe: a threads-pool worker may resolve agents from several runs at once."""

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._lock = threading.Lock()
        self._agents: dict[str, Agent] = {}
        self._factories: dict[str, AgentFactory] = {}  # built (and cached) on first get
        for agent in agents:
            self.register(agent)

    @classmethod
    def with_builtins(
        cls,
        *,
        clock: Clock | None = None,
        agents_file: Path | None = None,
        declared: DeclaredAgents | None = None,
    ) -> AgentRegistry:
        """The built-in demo agents, plus the agents file's entries if one is given."""
        registry = cls(builtin_agents(clock))
        if agents_file is not None:
            registry.load_file(agents_file, declared=declared)
        return registry

    def register(self, agent: Agent, *, name: str | None = None) -> None:
        key = name or agent.name
        with self._lock:
            self._check_free(key)
            self._agents[key] = agent

    def register_factory(self, name: str, target: str, *, source: str = "<code>") -> None:
        """Register ``"package.module:factory"`` under ``name``; imported on first ``get``."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{source}: invalid agent name {name!r}")
        if not isinstance(target, str) or not _TARGET.match(target):
            raise ConfigError(
                f"{source}: agent {name!r} must map to 'package.module:factory', got {target!r}"
            )
        self._add_factory(name, functools.partial(_build, name, target, source))

    def register_declared(
        self,
        name: str,
        table: Mapping[str, Any],
        *,
        declared: DeclaredAgents | None,
        source: str = "<code>",
    ) -> None:
        """Register an agent declared as a table; ``declared`` validates it now."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{source}: invalid agent name {name!r}")
        if declared is None:
            raise ConfigError(
                f"{source}: agent {name!r} is declared as a table, which only the worker can "
                "build (it needs a model adapter); give a 'package.module:factory' here"
            )
        with self._lock:
            self._check_free(name)
        self._add_factory(name, declared(name, table, source))

    def _add_factory(self, name: str, factory: AgentFactory) -> None:
        with self._lock:
            self._check_free(name)
            self._factories[name] = factory

    def load_file(self, path: Path, *, declared: DeclaredAgents | None = None) -> list[str]:
        """Read an agents file and register its entries (lazily). Returns the names added."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read agents file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"agents file {path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(data) - {"agents"})
        if unknown:
            raise ConfigError(f"agents file {path}: unknown top-level keys {unknown}")
        table = data.get("agents")
        if not isinstance(table, dict):
            raise ConfigError(f"agents file {path}: needs an [agents] table of name = target")
        for name, entry in table.items():
            if isinstance(entry, dict):
                self.register_declared(name, entry, declared=declared, source=str(path))
            else:
                self.register_factory(name, entry, source=str(path))
        return list(table)

    def get(self, name: str) -> Agent:
        """The agent called ``name``; UnknownAgentError lists the known names."""
        with self._lock:
            agent = self._agents.get(name)
            if agent is not None:
                return agent
            if name not in self._factories:
                known = ", ".join(sorted({*self._agents, *self._factories})) or "none"
                raise UnknownAgentError(f"unknown agent {name!r}; known agents: {known}")
            agent = self._factories[name]()
            # Cache only a successful build: a fixed module can be retried without a restart.
            self._agents[name] = agent
            del self._factories[name]
            return agent

    def load_all(self) -> None:
        """Import every lazily registered agent now; the first bad entry raises ConfigError."""
        for name in self.names():
            self.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted({*self._agents, *self._factories})

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._agents or name in self._factories

    def _check_free(self, name: str) -> None:
        if name in self._agents or name in self._factories:
            raise ConfigError(f"agent {name!r} is already registered")


def _build(name: str, target: str, source: str) -> Agent:
    module_name, _, attr_path = target.partition(":")
    where = f"{source}: agent {name!r} ({target})"
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {module_name}: {describe(exc)}") from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ConfigError(f"{where}: {module_name} has no attribute {attr_path}") from exc
    if not callable(obj):
        raise ConfigError(f"{where}: {attr_path} is not callable")
    try:
        agent: object = obj()
    except Exception as exc:
        raise ConfigError(f"{where}: the factory raised {describe(exc)}") from exc
    lacks = [m for m in _AGENT_METHODS if not callable(getattr(agent, m, None))]
    if not isinstance(getattr(agent, "name", None), str):
        lacks.append("name")
    if lacks:
        raise ConfigError(f"{where}: the factory returned {agent!r}, not an Agent (lacks {lacks})")
    return cast(Agent, agent)  # checked structurally just above
