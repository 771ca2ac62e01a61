"""The persona and skill batteries: lookup rules, file errors, which run gets which tools."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from executus_worker.batteries.persona import PersonaBook
from executus_worker.batteries.skill import SkillRegistry
from executus_worker.core.models import Message, RunInfo, ToolCall
from executus_worker.core.ports import ToolSpec
from executus_worker.errors import ConfigError


def run(agent: str = "support", guild: str | None = None) -> RunInfo:
    return RunInfo(run_id="r1", agent=agent, guild_id=guild)


# -- persona ---------------------------------------------------------------------------------


def test_a_guild_override_beats_the_agents_prompt_which_beats_the_default() -> None:
    book = PersonaBook(
        agents={"support": "You help customers."},
        guilds={"acme": {"support": "You help ACME's customers."}, "beta": {"*": "Be terse."}},
        default="You are careful.",
    )
    assert book.system_prompt(run("support", "acme")) == "You help ACME's customers."
    assert book.system_prompt(run("other", "acme")) == "You are careful."
    assert book.system_prompt(run("support", "beta")) == "Be terse."
    assert book.system_prompt(run("support", "gamma")) == "You help customers."
    assert book.system_prompt(run("support")) == "You help customers."
    assert PersonaBook().system_prompt(run()) is None  # no override: the agent's own prompt


def test_a_persona_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "persona.toml"
    path.write_text('default = "d"\n[agents]\n"support" = "s"\n[guilds.acme]\n"*" = "a"\n')
    book = PersonaBook.load(path)
    assert (book.system_prompt(run()), book.system_prompt(run("x", "acme"))) == ("s", "a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agents = [", "not valid TOML"),
        ("colour = 'red'", "unknown keys ['colour']"),
        ("default = 3", "default must be a string"),
        ("[agents]\nsupport = 3", "agents: prompts must be strings (['support'])"),
        ("[guilds]\nacme = 'x'", "[guilds.acme] must be a table of prompts"),
    ],
)
def test_a_bad_persona_file_names_the_file_and_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "persona.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        PersonaBook.load(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


# -- skills ----------------------------------------------------------------------------------


class Echo:
    """A Tools provider answering with its own name."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
        return [ToolSpec(name) for name in self.names]

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        return Message(role="tool", tool_call_id=call.id, name=call.name, content=f"by {self}")

    def __str__(self) -> str:
        return "+".join(self.names)


def tool_names(skills: SkillRegistry, r: RunInfo) -> list[str]:
    return [spec.name for spec in skills.tools(r).specs(r)]


def test_shared_skills_reach_every_agent_named_ones_only_their_agents() -> None:
    skills = SkillRegistry(named_by=lambda r: ["search"] if r.agent == "researcher" else [])
    skills.add("clock", Echo("now"), shared=True)
    skills.add("search", Echo("web_search"))
    skills.add("billing", Echo("refund"))
    skills.grant("support", "billing")
    assert tool_names(skills, run("support")) == ["now", "refund"]
    assert tool_names(skills, run("researcher")) == ["now", "web_search"]
    assert tool_names(skills, run("other")) == ["now"]


def test_calls_are_routed_to_the_skill_that_offers_the_tool() -> None:
    skills = SkillRegistry()
    skills.add("a", Echo("one"), shared=True)
    skills.add("b", Echo("two"), shared=True)
    tools = skills.tools(run())
    assert tools.call(run(), ToolCall(id="c", name="two")).content == "by two"
    assert tools.call(run(), ToolCall(id="c", name="nope")).content == "error: no tool named 'nope'"


def test_a_clash_between_skills_keeps_the_first_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    skills = SkillRegistry()
    skills.add("first", Echo("search"), shared=True)
    skills.add("second", Echo("search", "fetch"), shared=True)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            tools = skills.tools(run())
    assert [s.name for s in tools.specs(run())] == ["search", "fetch"]
    assert tools.call(run(), ToolCall(id="c", name="search")).content == "by search"
    assert caplog.text.count("is shadowed") == 1


def test_unknown_names_are_refused_when_granted_and_warned_when_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    skills = SkillRegistry(named_by=lambda r: ["ghost"])
    skills.add("clock", Echo("now"))
    with pytest.raises(ConfigError, match=r"granted unknown skills \['nope'\]"):
        skills.grant("support", "nope")
    with caplog.at_level(logging.WARNING):
        assert tool_names(skills, run()) == []
    assert "names unknown skills ['ghost']" in caplog.text


def test_a_broken_agent_lookup_costs_only_the_named_skills(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(r: RunInfo) -> list[str]:
        raise RuntimeError("registry exploded")

    skills = SkillRegistry(named_by=broken)
    skills.add("clock", Echo("now"), shared=True)
    with caplog.at_level(logging.ERROR):
        assert tool_names(skills, run()) == ["now"]
    assert "registry exploded" in caplog.text
