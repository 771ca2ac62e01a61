"""The batteries as the worker builds them from settings: each one optional, null when unset,
and a broken file leaves its battery out instead of breaking the worker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from executus_worker.batteries.audit import FanoutAudit, LoggingAudit
from executus_worker.batteries.budget import LedgerBudget
from executus_worker.batteries.persona import PersonaBook
from executus_worker.batteries.skill import SkillRegistry
from executus_worker.core.ports import NullPersona, NullSkills
from executus_worker.settings import Settings
from executus_worker.worker.wiring import build_batteries

# Nothing here talks to Redis: the batteries only connect when a run uses them.
CLIENT = redis.Redis(port=1)


def test_unset_batteries_are_their_null_objects() -> None:
    batteries = build_batteries(Settings(audit_stream=False, critic_enabled=False), CLIENT)
    try:
        assert isinstance(batteries.audit, LoggingAudit)
        assert isinstance(batteries.persona, NullPersona)
        assert isinstance(batteries.skills, NullSkills)
        # Always wired, and free for runs no limit applies to: a request's own limits work.
        assert isinstance(batteries.budget, LedgerBudget)
    finally:
        batteries.close()


def test_configured_batteries_are_built(tmp_path: Path) -> None:
    persona = tmp_path / "persona.toml"
    persona.write_text('default = "Be kind."\n')
    skills = tmp_path / "skills.toml"
    skills.write_text('[skills.clock]\ntools = ["tests.worker.skill_tools:utc_now"]\n')
    batteries = build_batteries(Settings(persona_file=persona, skills_file=skills), CLIENT)
    try:
        assert isinstance(batteries.audit, FanoutAudit)
        assert isinstance(batteries.persona, PersonaBook)
        assert isinstance(batteries.skills, SkillRegistry)
    finally:
        batteries.close()


def test_a_broken_battery_file_is_logged_and_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    persona = tmp_path / "persona.toml"
    persona.write_text("default = [")
    with caplog.at_level(logging.ERROR):
        batteries = build_batteries(Settings(persona_file=persona), CLIENT)
    batteries.close()
    assert isinstance(batteries.persona, NullPersona)
    assert f"persona battery left out: persona file {persona}: not valid TOML" in caplog.text
