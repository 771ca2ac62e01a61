"""Persona battery: the system prompt a run's model sees. The default gives none."""

from __future__ import annotations

from collections.abc import Mapping

from executus_worker.core.models import RunInfo


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
