"""Persona battery: the system prompt a run's model sees. The default gives none, and the agent's
own prompt applies (a declared agent's ``system_prompt``).

``PersonaBook`` holds a prompt per agent with per-guild overrides, usually from a TOML file
(``EXECUTUS_PERSONA_FILE``)::

    default = "You are a careful assistant."      # optional: every agent without its own
    [agents]
    "support.triage" = "You triage support tickets."
    [guilds.acme]                                  # a guild (tenant) id
    "*" = "Answer in the voice of ACME Corp."      # every agent, for this guild
    "support.triage" = "You triage ACME's tickets." # one agent, for this guild

A run of agent A in guild G gets the first of: ``guilds.G.A``, ``guilds.G."*"``,
``agents.A``, ``default``; none of them set means no override.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

from executus_worker.core.models import RunInfo
from executus_worker.errors import ConfigError


class StaticPersona:
    """The same system prompt for every run."""

    def __init__(self, prompt: str) -> None:
        self._prompt = prompt

    def system_prompt(self, run: RunInfo) -> str | None:
        return self._prompt


class GuildPersona:
    """A system prompt per ``guild_id`` (tenant), with a fallback for the rest."""

    def __init__(self, prompts: Mapping[str, str], default: str | None = None) -> None:
        self._prompts = dict(prompts)
        self._default = default

    def system_prompt(self, run: RunInfo) -> str | None:
        if run.guild_id is not None and run.guild_id in self._prompts:
            return self._prompts[run.guild_id]
        return self._default


class PersonaBook:
    """A system prompt per agent, with per-guild overrides (see the module docstring)."""

    def __init__(
        self,
        agents: Mapping[str, str] | None = None,
        guilds: Mapping[str, Mapping[str, str]] | None = None,
        default: str | None = None,
    ) -> None:
        self._agents = dict(agents or {})
        self._guilds = {guild: dict(table) for guild, table in (guilds or {}).items()}
        self._default = default

    def system_prompt(self, run: RunInfo) -> str | None:
        if run.guild_id is not None:
            table = self._guilds.get(run.guild_id)
            if table is not None:
                prompt = table.get(run.agent, table.get("*"))
                if prompt is not None:
                    return prompt
        return self._agents.get(run.agent, self._default)

    @classmethod
    def load(cls, path: Path) -> PersonaBook:
        """Read a persona file; ConfigError naming the file and the key that is wrong."""
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"persona file {path}: cannot read it: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"persona file {path}: not valid TOML: {exc}") from exc
        unknown = sorted(set(data) - {"default", "agents", "guilds"})
        if unknown:
            raise ConfigError(
                f"persona file {path}: unknown keys {unknown} (expected default, agents, guilds)"
            )
        default = data.get("default")
        if default is not None and not isinstance(default, str):
            raise ConfigError(f"persona file {path}: default must be a string")
        agents = _prompts(path, "agents", data.get("agents", {}))
        raw_guilds = data.get("guilds", {})
        if not isinstance(raw_guilds, dict):
            raise ConfigError(f"persona file {path}: [guilds] must be a table of tables")
        guilds = {
            str(guild): _prompts(path, f"guilds.{guild}", table)
            for guild, table in raw_guilds.items()
        }
        return cls(agents, guilds, default)


def _prompts(path: Path, where: str, table: object) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"persona file {path}: [{where}] must be a table of prompts")
    bad = sorted(str(key) for key, value in table.items() if not isinstance(value, str))
    if bad:
        raise ConfigError(f"persona file {path}: {where}: prompts must be strings ({bad})")
    return {str(key): value for key, value in table.items()}
