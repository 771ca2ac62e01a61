from __future__ import annotations

import json
import logging

import pytest

from executus_worker.batteries import (
    GuildPersona,
    LoggingAudit,
    MemoryAudit,
    SkillSet,
    StaticPersona,
)
from executus_worker.core.models import RunInfo, ToolCall

RUN = RunInfo(run_id="r1", agent="a", guild_id="g1", input={"api_key": "secret"})


def test_logging_audit_writes_one_json_line_without_the_run_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="executus.audit")
    LoggingAudit().record(RUN, "step", {"iteration": 3})
    (record,) = caplog.records
    line = json.loads(record.getMessage())
    assert line == {"event": "step", "run_id": "r1", "agent": "a", "epoch": 0, "iteration": 3}
    assert "secret" not in record.getMessage()


def test_memory_audit_keeps_events_in_order() -> None:
    audit = MemoryAudit()
    audit.record(RUN, "a", {})
    audit.record(RUN, "b", {"x": 1})
    assert [e for _, e, _ in audit.events] == ["a", "b"]


def test_personas() -> None:
    assert StaticPersona("be brief").system_prompt(RUN) == "be brief"
    guilds = GuildPersona({"g1": "pirate"}, default="plain")
    assert guilds.system_prompt(RUN) == "pirate"
    assert guilds.system_prompt(RUN.model_copy(update={"guild_id": "g2"})) == "plain"


def test_skillset_calls_tools_and_turns_failures_into_error_results() -> None:
    skills = SkillSet()
    skills.add("add", lambda a, b: a + b, "adds")
    skills.add("boom", lambda: 1 / 0)
    tools = skills.tools(RUN)
    assert [s.name for s in tools.specs(RUN)] == ["add", "boom"]
    ok = tools.call(RUN, ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3}))
    assert (ok.role, ok.tool_call_id, ok.content) == ("tool", "c1", "5")
    bad = tools.call(RUN, ToolCall(id="c2", name="boom"))
    assert bad.content.startswith("error: ZeroDivisionError")
    missing = tools.call(RUN, ToolCall(id="c3", name="nope"))
    assert "no tool named" in missing.content
