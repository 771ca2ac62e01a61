"""Agents declared in the agents file: validated on load, run on the OpenAI-compatible adapter."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import OutcomeKind, RunInfo
from executus_worker.core.ports import Deps
from executus_worker.core.stop import StopToken
from executus_worker.errors import ConfigError
from executus_worker.models.declarative import DeclarativeAgent, declared_agents
from executus_worker.models.fake_server import Answer, FakeOpenAI, completion, tool_call
from executus_worker.settings import ModelTier, Settings

TOOLS = "tests.models.declared_tools"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def settings_for(fake: FakeOpenAI | None = None, **fields: Any) -> Settings:
    base = {
        "model_name": "fake-model",
        "model_base_url": fake.base_url if fake else "http://127.0.0.1:9/v1",
        "model_max_retries": 0,
    }
    return Settings.model_construct(**(Settings.model_construct().model_dump() | base | fields))


def registry(tmp_path: Path, body: str, settings: Settings) -> AgentRegistry:
    path = tmp_path / "agents.toml"
    path.write_text(textwrap.dedent(body))
    return AgentRegistry.with_builtins(agents_file=path, declared=declared_agents(settings))


def run(agent: str, **input: Any) -> RunInfo:
    return RunInfo(run_id=f"run-{agent}", agent=agent, input=input, epoch=1)


def execute_closing(agent: Any, info: RunInfo) -> Any:
    try:
        return execute(agent, info, Deps(), StopToken())
    finally:
        assert isinstance(agent, DeclarativeAgent)
        agent.close()


# -- a whole run ---------------------------------------------------------------------------


def test_a_declared_agent_calls_its_tool_and_answers(fake: FakeOpenAI, tmp_path: Path) -> None:
    def brain(body: dict[str, Any]) -> Answer:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return Answer(body=completion(f"it is {last['content']}"))
        return Answer(body=completion("", tool_calls=[tool_call("c1", "add", {"a": 40, "b": 2})]))

    fake.brain = brain
    agents = registry(tmp_path, f"""
        [agents]
        "coded.agent" = "some.module:factory"

        [agents."math.helper"]
        system_prompt = "You are a careful calculator."
        tools = ["{TOOLS}:add"]
    """, settings_for(fake))  # fmt: skip
    assert agents.names() == ["coded.agent", "demo.counter", "demo.phased", "math.helper"]
    outcome = execute_closing(agents.get("math.helper"), run("math.helper", prompt="40 + 2?"))

    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == "it is 42"
    first = fake.requests[0]
    assert first["messages"] == [
        {"role": "system", "content": "You are a careful calculator."},
        {"role": "user", "content": "40 + 2?"},
    ]
    assert [t["function"]["name"] for t in first["tools"]] == ["add"]


def test_a_structured_input_is_sent_as_json(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.answer(Answer(body=completion("ok")))
    agents = registry(tmp_path, '[agents."a.b"]\n', settings_for(fake))
    execute_closing(agents.get("a.b"), run("a.b", ticket=7, text="refund"))
    assert fake.requests[0]["messages"] == [
        {"role": "user", "content": '{"text": "refund", "ticket": 7}'}
    ]


def test_max_iterations_makes_the_last_step_answer_without_tools(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """A model that would call tools forever is made to answer at step max_iterations."""

    def brain(body: dict[str, Any]) -> Answer:
        if body.get("tool_choice") == "none":
            return Answer(body=completion("best effort answer"))
        n = sum(1 for m in body["messages"] if m["role"] == "tool")
        return Answer(body=completion("", tool_calls=[tool_call(f"c{n}", "add", {"a": n, "b": 1})]))

    fake.brain = brain
    agents = registry(tmp_path, f"""
        [agents."loopy"]
        tools = ["{TOOLS}:add"]
        max_iterations = 3
    """, settings_for(fake))  # fmt: skip
    outcome = execute_closing(agents.get("loopy"), run("loopy", prompt="go"))
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == "best effort answer"
    assert outcome.iterations == 3
    assert [r.get("tool_choice") for r in fake.requests] == [None, None, "none"]


def test_phases_seed_their_instructions_and_have_their_own_limits(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    def brain(body: dict[str, Any]) -> Answer:
        last_user = next(m for m in reversed(body["messages"]) if m["role"] == "user")
        phase = last_user["content"].split(":")[0]
        if body.get("tool_choice") == "none" or phase == "Phase report":
            return Answer(body=completion(f"{phase} done"))
        return Answer(body=completion("", tool_calls=[tool_call(
            f"c{len(body['messages'])}", "add", {"a": 1, "b": 1})]))  # fmt: skip

    fake.brain = brain
    agents = registry(tmp_path, f"""
        [agents."planner"]
        tools = ["{TOOLS}:add"]
        max_iterations = 4

        [[agents."planner".phases]]
        name = "plan"
        instructions = "Make a plan."
        max_iterations = 2

        [[agents."planner".phases]]
        name = "report"
        instructions = "Write the report."
    """, settings_for(fake))  # fmt: skip
    outcome = execute_closing(agents.get("planner"), run("planner", prompt="the task"))

    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == {"plan": "Phase plan done", "report": "Phase report done"}
    # plan: one tool step, then its 2nd (last allowed) step has tools off; report answers at once.
    assert [r.get("tool_choice") for r in fake.requests] == [None, "none", None]
    sent = fake.requests[2]["messages"]
    assert [m["role"] for m in sent] == ["user", "user", "assistant", "tool", "assistant", "user"]
    assert sent[0]["content"] == "the task"
    assert sent[1]["content"] == "Phase plan: Make a plan."
    assert sent[5]["content"] == "Phase report: Write the report."
    assert "name" not in sent[1]  # our phase marker never goes on the wire


def test_the_requests_model_tier_picks_the_endpoint(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.brain = lambda body: Answer(body=completion(body["model"]))
    tiers = {"big": ModelTier(model="big-model"), "small": ModelTier(model="small-model")}
    agents = registry(tmp_path, """
        [agents."tiered"]
        model_tier = "small"
    """, settings_for(fake, model_tiers=tiers))  # fmt: skip
    agent = agents.get("tiered")
    try:
        info = run("tiered", prompt="hi")
        assert execute(agent, info, Deps(), StopToken()).output == "small-model"
        big = info.model_copy(update={"model_tier": "big"})
        assert execute(agent, big, Deps(), StopToken()).output == "big-model"
        unknown = info.model_copy(update={"model_tier": "nope"})
        failed = execute(agent, unknown, Deps(), StopToken())
        assert failed.kind is OutcomeKind.FAILED
        assert "model tier 'nope' is not configured" in (failed.error or "")
    finally:
        assert isinstance(agent, DeclarativeAgent)
        agent.close()


# -- a bad agents file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("temperature = 0.2\n", "temperature: Extra inputs are not permitted"),
        ("max_iterations = 0\n", "max_iterations: Input should be greater than or equal to 1"),
        ('tools = ["not a path"]\n', "tools.0: String should match pattern"),
        ("phases = []\n", "phases: List should have at least 1 item"),
        ('phases = [{name = "a"}, {name = "a"}]\n', "duplicate phase names \\['a'\\]"),
        ('phases = [{name = "a", steps = 2}]\n', "phases.0.steps: Extra inputs"),
        ('model_tier = "huge"\n', "model tier 'huge' is not configured"),
    ],
)
def test_a_bad_table_names_the_file_the_agent_and_the_field(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        registry(tmp_path, f'[agents."bad.one"]\n{table}', settings_for())
    assert f"{tmp_path / 'agents.toml'}: agent 'bad.one'" in str(raised.value)


def test_a_missing_model_name_is_reported_when_the_file_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agent 'm': no model name for tier 'default'"):
        registry(tmp_path, '[agents."m"]\n', settings_for(model_name=None))
    agents = registry(
        tmp_path, '[agents."m"]\nmodel = "given-here"\n', settings_for(model_name=None)
    )
    assert "m" in agents


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "no_such_module_qq:tool",
            "tool 'no_such_module_qq:tool' cannot be loaded: ModuleNotFound",
        ),
        (f"{TOOLS}:absent", f"tool '{TOOLS}:absent' cannot be loaded: AttributeError"),
        (f"{TOOLS}:NOT_A_FUNCTION", "neither a function nor a FunctionTool"),
        (f"{TOOLS}:star", "parameter 'numbers' must be an ordinary keyword parameter"),
    ],
)
def test_a_tool_that_cannot_be_loaded_names_the_agent_and_the_tool(
    tmp_path: Path, path: str, message: str
) -> None:
    agents = registry(tmp_path, f'[agents."t"]\ntools = ["{path}"]\n', settings_for())
    with pytest.raises(ConfigError, match=message) as raised:
        agents.get("t")
    assert "agent 't'" in str(raised.value)
    with pytest.raises(ConfigError):
        agents.load_all()


def test_a_table_without_the_workers_loader_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agents.toml"
    path.write_text('[agents."x"]\nsystem_prompt = "hi"\n')
    with pytest.raises(
        ConfigError, match="agent 'x' is declared as a table, which only the worker"
    ):
        AgentRegistry.with_builtins(agents_file=path)
