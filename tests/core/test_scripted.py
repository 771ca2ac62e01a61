"""The scripted model users test their agents with, and the demo agents' input schemas."""

from __future__ import annotations

import pytest
from kernel_fakes import run_info

from executus_worker.core.demo_agents import CounterAgent, PhasedAgent
from executus_worker.core.ports import ModelReply, ModelRequest
from executus_worker.core.scripted import ScriptedModel, ScriptExhausted, say
from executus_worker.errors import PayloadError


def request() -> ModelRequest:
    return ModelRequest(run=run_info(), phase=None, messages=(), tools=())


def test_list_script_replies_in_order_then_says_it_is_exhausted() -> None:
    model = ScriptedModel(["hello", say("bye", done=True, output=1)])
    first, second = model.complete(request()), model.complete(request())
    assert first.message is not None and first.message.content == "hello"
    assert not first.done
    assert (second.done, second.output) == (True, 1)
    with pytest.raises(ScriptExhausted, match="has 2 replies; call 3"):
        model.complete(request())
    assert model.calls == 3


def test_function_script_sees_each_request() -> None:
    def echo(req: ModelRequest) -> ModelReply:
        return say(f"{len(req.messages)} messages")

    model = ScriptedModel(echo)
    reply = model.complete(request())
    assert reply.message is not None and reply.message.content == "0 messages"
    assert model.requests == [request()]


@pytest.mark.parametrize(
    ("agent", "payload", "message"),
    [
        (CounterAgent(), {"steps": "many"}, "steps: Input should be a valid integer"),
        (CounterAgent(), {"steps": 3, "step_s": -1}, "step_s: Input should be greater"),
        (PhasedAgent(), {"phases": []}, "phases: List should have at least 1 item"),
        (PhasedAgent(), {"phases": ["a", "a"]}, "phase names must be unique"),
        (PhasedAgent(), {"phases": ["a b"]}, "phases.0: String should match pattern"),
    ],
)
def test_demo_agents_reject_bad_input(
    agent: CounterAgent | PhasedAgent, payload: dict[str, object], message: str
) -> None:
    with pytest.raises(PayloadError, match=f"invalid input for {agent.name}: .*{message}"):
        agent.model(run_info(agent.name, input=payload))


def test_demo_defaults() -> None:
    assert PhasedAgent().phases(run_info("demo.phased")) == ["plan", "work", "report"]
