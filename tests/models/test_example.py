"""examples/agents.toml loads, and its agent runs end to end against the fake server."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import OutcomeKind, RunInfo
from executus_worker.core.ports import Deps
from executus_worker.core.stop import StopToken
from executus_worker.models.declarative import DeclarativeAgent, declared_agents
from executus_worker.models.fake_server import Answer, FakeOpenAI, completion, tool_call
from executus_worker.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in [m for m in sys.modules if m == "support" or m.startswith("support.")]:
        del sys.modules[name]


def support_brain(body: dict[str, Any]) -> Answer:
    """A model that follows the example's instructions."""
    results = {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}
    phase = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if phase.startswith("Phase investigate"):
        if "c1" not in results:
            return Answer(body=completion("", tool_calls=[tool_call("c1", "lookup_order", {
                "order_id": "A-1001"})]))  # fmt: skip
        if "c2" not in results:
            return Answer(body=completion("", tool_calls=[tool_call("c2", "refund_policy", {
                "reason": "damaged"})]))  # fmt: skip
        return Answer(body=completion("Delivered damaged; full refund within 30 days."))
    if "c3" not in results:
        return Answer(body=completion("", tool_calls=[tool_call("c3", "issue_refund", {
            "order_id": "A-1001", "amount_eur": 249.0, "reason": "damaged"})]))  # fmt: skip
    refund = json.loads(results["c3"])
    return Answer(body=completion(f"Refunded {refund['amount_eur']} EUR ({refund['refund_id']})."))


def test_the_example_support_agent_investigates_then_refunds(examples_on_path: None) -> None:
    with FakeOpenAI(support_brain) as fake:
        settings = Settings.model_construct(
            **(Settings.model_construct().model_dump()
               | {"model_base_url": fake.base_url, "model_name": "any-model"})
        )  # fmt: skip
        registry = AgentRegistry.with_builtins(
            agents_file=EXAMPLES / "agents.toml", declared=declared_agents(settings)
        )
        agent = registry.get("example.support")
        assert isinstance(agent, DeclarativeAgent)
        run = RunInfo(
            run_id="ex-1", agent="example.support", epoch=1,
            input={"prompt": "Order A-1001 arrived broken, refund please."},
        )  # fmt: skip
        try:
            outcome = execute(agent, run, Deps(), StopToken())
        finally:
            agent.close()

    assert outcome.kind is OutcomeKind.COMPLETED, outcome.error
    assert outcome.output == {
        "investigate": "Delivered damaged; full refund within 30 days.",
        "resolve": "Refunded 249.0 EUR (R-0001).",
    }
    tools = [t["function"]["name"] for t in fake.requests[0]["tools"]]
    assert tools == ["lookup_order", "refund_policy", "issue_refund"]
    assert fake.requests[0]["messages"][0]["content"].startswith("You are the support agent")
