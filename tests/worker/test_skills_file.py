"""The skills file and the persona file as the worker loads them, and the batteries they make
reaching a run through the executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from executus_worker.core.agents import AgentRegistry
from executus_worker.core.demo_agents import CounterAgent
from executus_worker.core.executor import execute
from executus_worker.core.models import RunInfo, ToolCall
from executus_worker.core.ports import Deps, ModelReply, ModelRequest
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel, say
from executus_worker.core.stop import StopToken
from executus_worker.errors import ConfigError
from executus_worker.settings import Settings
from executus_worker.worker.skills import load_skills
from executus_worker.worker.wiring import build_persona, check_battery_files

SKILLS = """
[skills.clock]
tools = ["tests.worker.skill_tools:utc_now"]
shared = true

[skills.orders]
tools = ["tests.worker.skill_tools:lookup_order"]
timeout_s = 5

[agents]
"support" = ["orders"]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def names(tools: object, run: RunInfo) -> list[str]:
    return [spec.name for spec in tools.specs(run)]  # type: ignore[attr-defined]


def test_a_skills_file_offers_shared_and_granted_skills(tmp_path: Path) -> None:
    class Researcher(CounterAgent):
        skills = ("orders",)  # an agent may name skills itself

    registry = AgentRegistry()
    registry.register(Researcher(), name="researcher")
    skills = load_skills(write(tmp_path, "s.toml", SKILLS), Settings(), registry)
    support, other, researcher = (
        RunInfo(run_id="r", agent=a) for a in ("support", "other", "researcher")
    )
    assert names(skills.tools(support), support) == ["utc_now", "lookup_order"]
    assert names(skills.tools(other), other) == ["utc_now"]
    assert names(skills.tools(researcher), researcher) == ["utc_now", "lookup_order"]
    spec = skills.tools(support).specs(support)[1]
    assert spec.parameters["required"] == ["order_id"]  # the ToolContext is not an argument


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[skills.x]\ntools = []", "skills.x.tools: List should have at least 1 item"),
        ("[skills.x]\ntools = ['no_colon']", "skills.x.tools.0: String should match pattern"),
        ("[skills.x]\ntools = ['nope.mod:fn']", "skill 'x': cannot import nope.mod"),
        (
            "[skills.x]\ntools = ['tests.worker.skill_tools:not_a_tool']",
            "skill 'x': tool tests.worker.skill_tools.not_a_tool: parameter 'args'",
        ),
        ("[agents]\nsupport = ['ghost']", "[agents] agent 'support' is granted unknown skills"),
        ("[skills.x]\ntools = ['a:b']\ncolour = 1", "skills.x.colour: Extra inputs"),
    ],
)
def test_a_bad_skills_file_names_the_file_and_what_is_wrong(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, "skills.toml", text)
    with pytest.raises(ConfigError) as caught:
        check_battery_files(Settings(skills_file=path))
    assert f"skills file {path}" in str(caught.value)
    assert message in str(caught.value)


def test_persona_and_skills_reach_the_model_through_the_executor(tmp_path: Path) -> None:
    persona = build_persona(
        Settings(persona_file=write(tmp_path, "p.toml", '[guilds.acme]\n"*" = "Be ACME."\n'))
    )
    skills = load_skills(write(tmp_path, "s.toml", SKILLS), Settings())
    seen: list[ModelRequest] = []

    def model(request: ModelRequest) -> ModelReply:
        seen.append(request)
        if len(seen) == 1:
            return say("", tool_calls=[ToolCall(id="c1", name="lookup_order",
                                                arguments={"order_id": "A-7"})])  # fmt: skip
        return say("done", done=True, output="ok")

    run = RunInfo(run_id="r1", agent="support", guild_id="acme")
    outcome = execute(
        ScriptedAgent("support", ScriptedModel(model)),
        run,
        Deps(persona=persona, skills=skills),
        StopToken(),
    )
    assert outcome.output == "ok"
    assert seen[0].system_prompt == "Be ACME."
    assert [spec.name for spec in seen[0].tools] == ["utc_now", "lookup_order"]
    result = seen[1].messages[-1]
    assert result.role == "tool" and '"order":"A-7"' in result.content
    assert '"idempotency_key":"r1:1:c1"' in result.content
