"""The OpenAI-compatible adapter over real HTTP against a fake server the tests start."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from executus_worker.core.executor import execute
from executus_worker.core.models import Checkpoint, Message, OutcomeKind, RunInfo, ToolCall
from executus_worker.core.ports import Deps, ModelRequest, NullCheckpointer, ToolSpec
from executus_worker.core.scripted import ScriptedAgent
from executus_worker.core.stop import StopToken
from executus_worker.errors import ModelError
from executus_worker.models.endpoints import ModelEndpoint
from executus_worker.models.fake_server import Answer, FakeOpenAI, completion, error_body, tool_call
from executus_worker.models.openai_chat import OpenAIChatModel
from executus_worker.models.retry import Backoff
from executus_worker.models.tools import RAW_ARGUMENTS_KEY, FunctionTools
from executus_worker.models.transcript import LOST_RESULT

RUN = RunInfo(run_id="run-oa", agent="a", epoch=1)
SECRET = "sk-test-4242-do-not-log"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _close_models() -> Iterator[None]:
    yield
    while BUILT:
        BUILT.pop().close()


BUILT: list[OpenAIChatModel] = []


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAKE_OPENAI_KEY", SECRET)
    return SECRET


class Sleeps(list[float]):
    """Records the backoff waits instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def model(
    fake: FakeOpenAI, *, timeout_s: float = 10, max_retries: int = 3, **kw: Any
) -> tuple[OpenAIChatModel, Sleeps]:
    endpoint = ModelEndpoint(
        tier="default",
        model="fake-model",
        base_url=fake.base_url,
        api_key_env="FAKE_OPENAI_KEY",
        timeout_s=timeout_s,
        max_retries=max_retries,
        input_cost_per_mtok=2.0,
        output_cost_per_mtok=10.0,
    )
    sleeps = Sleeps()
    backoff = Backoff(jitter=lambda: 0.0)
    chat = OpenAIChatModel(endpoint, backoff=backoff, sleep=sleeps, **kw)
    BUILT.append(chat)
    return chat, sleeps


def request(
    messages: Sequence[Message] = (Message(role="user", content="hi"),),
    tools: Sequence[ToolSpec] = (),
    system_prompt: str | None = None,
) -> ModelRequest:
    return ModelRequest(
        run=RUN, phase=None, messages=tuple(messages), tools=tuple(tools),
        system_prompt=system_prompt,
    )  # fmt: skip


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


# -- a round trip --------------------------------------------------------------------------


def test_a_tool_call_round_trip_through_the_kernel(fake: FakeOpenAI, api_key: str) -> None:
    """Model asks for add(2, 3); the tool answers 5; the model answers with the sum."""

    def brain(body: dict[str, Any]) -> Answer:
        last = body["messages"][-1]
        if last["role"] == "tool":
            return Answer(body=completion(f"the sum is {last['content']}"))
        return Answer(
            body=completion(None, tool_calls=[tool_call("call_1", "add", {"a": 2, "b": 3})])
        )

    fake.brain = brain
    chat, _ = model(fake, system_prompt="You add numbers.")
    agent = ScriptedAgent(
        "adder", chat, seeds={None: [Message(role="user", content="2+3?")]},
        tools_=FunctionTools([add]),
    )  # fmt: skip
    outcome = execute(agent, RUN, Deps(), StopToken())

    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == "the sum is 5"
    assert outcome.iterations == 2
    first, second = fake.requests
    assert first["model"] == "fake-model"
    assert first["messages"] == [
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "2+3?"},
    ]
    [spec] = first["tools"]
    assert spec["function"]["name"] == "add"
    assert spec["function"]["description"] == "Add two integers."
    assert spec["function"]["parameters"]["required"] == ["a", "b"]
    assert "tool_choice" not in first
    assert second["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "add", "arguments": '{"a":2,"b":3}'}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]  # fmt: skip
    assert fake.headers[0]["authorization"] == f"Bearer {api_key}"


def test_usage_is_reported_and_priced(fake: FakeOpenAI, api_key: str) -> None:
    fake.answer(Answer(body=completion("ok", prompt_tokens=1000, completion_tokens=500)))
    chat, _ = model(fake)
    reply = chat.complete(request())
    assert reply.done
    assert reply.output == "ok"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (1000, 500)
    assert reply.usage.cost_usd == pytest.approx((1000 * 2.0 + 500 * 10.0) / 1e6)


def test_the_persona_batterys_prompt_replaces_the_agents(fake: FakeOpenAI, api_key: str) -> None:
    fake.answer(Answer(body=completion("ok")))
    chat, _ = model(fake, system_prompt="agent persona")
    chat.complete(request(system_prompt="guild persona"))
    assert fake.requests[0]["messages"][0] == {"role": "system", "content": "guild persona"}


def test_a_final_step_forbids_tools_and_drops_calls_the_server_sent_anyway(
    fake: FakeOpenAI, api_key: str
) -> None:
    fake.answer(Answer(body=completion("wrapping up", tool_calls=[tool_call("c9", "add", {})])))
    chat, _ = model(fake)
    reply = chat.chat(request(tools=[ToolSpec("add")]), final=True)
    assert fake.requests[0]["tool_choice"] == "none"
    assert reply.done and reply.output == "wrapping up"
    assert reply.message is not None and reply.message.tool_calls == ()


def test_tool_arguments_that_are_not_json_are_kept_verbatim(fake: FakeOpenAI, api_key: str) -> None:
    fake.answer(Answer(body=completion(None, tool_calls=[tool_call("c1", "add", "{a: 2")])))
    chat, _ = model(fake)
    reply = chat.complete(request())
    assert reply.message is not None
    [call] = reply.message.tool_calls
    assert call.arguments == {RAW_ARGUMENTS_KEY: "{a: 2"}
    assert not reply.done
    # Sent back exactly as the model wrote it.
    fake.answer(Answer(body=completion("ok")))
    tool_msg = Message(role="tool", tool_call_id="c1", content="error: ...")
    chat.complete(request([Message(role="user", content="x"), reply.message, tool_msg]))
    sent = fake.requests[1]["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent == "{a: 2"


def test_tool_calls_without_ids_get_ids_from_their_transcript_position(
    fake: FakeOpenAI, api_key: str
) -> None:
    calls = [
        {"type": "function", "function": {"name": "add", "arguments": "{}"}},
        {"type": "function", "function": {"name": "add", "arguments": "{}"}},
    ]
    fake.answer(Answer(body=completion(None, tool_calls=calls)))
    chat, _ = model(fake)
    reply = chat.complete(request())
    assert reply.message is not None
    assert [c.id for c in reply.message.tool_calls] == ["call_1_0", "call_1_1"]


# -- resume: no call without its result ----------------------------------------------------


class _Resumed(NullCheckpointer):
    """A checkpoint left by a crash between the model's reply and its tool results."""

    def __init__(self, messages: list[Message]) -> None:
        self.checkpoint = Checkpoint(run_id=RUN.run_id, iteration=1, messages=messages)
        self.final: Checkpoint | None = None

    def load(self) -> Checkpoint | None:
        return self.checkpoint

    def complete(self, checkpoint: Checkpoint, output: Any) -> None:
        self.final = checkpoint


class _Factory:
    def __init__(self, handle: _Resumed) -> None:
        self.handle = handle

    def begin(self, run: RunInfo, stop: StopToken) -> _Resumed:
        return self.handle


def test_a_resumed_run_never_shows_the_model_a_call_without_its_result(
    fake: FakeOpenAI, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    dangling = Message(
        role="assistant",
        tool_calls=(ToolCall(id="c1", name="add", arguments={"a": 1, "b": 1}),
                    ToolCall(id="c2", name="add", arguments={"a": 2, "b": 2})),
    )  # fmt: skip
    answered = Message(role="tool", tool_call_id="c1", name="add", content="2")
    handle = _Resumed([Message(role="user", content="sums?"), dangling, answered])
    fake.answer(Answer(body=completion("2 and 4")))
    chat, _ = model(fake)
    agent = ScriptedAgent("adder", chat, tools_=FunctionTools([add]))
    outcome = execute(agent, RUN, Deps(checkpoints=_Factory(handle)), StopToken())

    assert outcome.kind is OutcomeKind.COMPLETED
    sent = fake.requests[0]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "2"}
    assert sent[3] == {"role": "tool", "tool_call_id": "c2", "content": LOST_RESULT}
    assert "1 tool call(s) without a result" in caplog.text
    # What is sent is repaired; what is stored stays what happened.
    assert handle.final is not None
    assert [m.role for m in handle.final.messages] == ["user", "assistant", "tool", "assistant"]


# -- failures ------------------------------------------------------------------------------


def test_429_then_success_waits_what_the_server_asked(fake: FakeOpenAI, api_key: str) -> None:
    fake.answer(
        Answer(
            429, error_body("Rate limit reached", "requests"), headers={"retry-after-ms": "250"}
        ),
        Answer(body=completion("finally")),
    )
    chat, sleeps = model(fake)
    reply = chat.complete(request())
    assert reply.output == "finally"
    assert len(fake.requests) == 2
    assert sleeps == [0.25]


def test_5xx_is_retried_with_growing_backoff_then_gives_up(fake: FakeOpenAI, api_key: str) -> None:
    fake.answer(*[Answer(503, error_body("overloaded", "server_error")) for _ in range(3)])
    chat, sleeps = model(fake, max_retries=2)
    with pytest.raises(ModelError) as raised:
        chat.complete(request())
    assert len(fake.requests) == 3
    assert sleeps == [0.25, 0.5]  # jitter 0: half of 0.5 s, 1 s
    assert "failed 3 time(s), giving up: HTTP 503: overloaded" in str(raised.value)
    assert "'fake-model'" in str(raised.value)


def test_a_retry_after_longer_than_the_limit_is_not_waited_out(
    fake: FakeOpenAI, api_key: str
) -> None:
    fake.answer(Answer(429, error_body("quota exhausted", "insufficient_quota"),
                       headers={"retry-after": "3600"}))  # fmt: skip
    chat, sleeps = model(fake)
    with pytest.raises(ModelError, match="failed 1 time"):
        chat.complete(request())
    assert sleeps == []


def test_a_timeout_is_retried_then_reported(fake: FakeOpenAI, api_key: str) -> None:
    fake.answer(Answer(body=completion("slow"), delay_s=3), Answer(body=completion("fast")))
    chat, sleeps = model(fake, timeout_s=0.3, max_retries=1)
    assert chat.complete(request()).output == "fast"
    assert len(sleeps) == 1

    fake.answer(Answer(body=completion("slow"), delay_s=3))
    chat, _ = model(fake, timeout_s=0.3, max_retries=0)
    with pytest.raises(ModelError, match=r"failed 1 time\(s\), giving up: no answer within 0.3s"):
        chat.complete(request())


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Answer(raw=b"<html>502 Bad Gateway</html>"), "not JSON ('<html>502 Bad Gateway</html>')"),
        (Answer(body={"object": "chat.completion"}), "choices: Field required"),
        (Answer(body={"choices": []}), "choices: List should have at least 1 item"),
        (Answer(body={"choices": [{"index": 0}]}), "choices.0.message: Field required"),
        (Answer(body=[1, 2]), "Input should be an object"),
    ],
)
def test_a_malformed_reply_fails_with_what_was_wrong(
    fake: FakeOpenAI, api_key: str, answer: Answer, problem: str
) -> None:
    fake.answer(answer)
    chat, _ = model(fake)
    with pytest.raises(ModelError) as raised:
        chat.complete(request())
    assert "the endpoint's reply is not a chat completion" in str(raised.value)
    assert problem in str(raised.value)
    assert len(fake.requests) == 1


def test_a_401_fails_at_once_naming_the_key_variable_never_the_key(
    fake: FakeOpenAI, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.answer(Answer(401, error_body("Incorrect API key provided", "invalid_request_error",
                                       "invalid_api_key")))  # fmt: skip
    chat, sleeps = model(fake)
    with pytest.raises(ModelError) as raised:
        chat.complete(request())
    message = str(raised.value)
    assert "rejected the API key (HTTP 401; the key is read from $FAKE_OPENAI_KEY)" in message
    assert "Incorrect API key provided" in message
    assert len(fake.requests) == 1 and sleeps == []
    assert SECRET not in message
    assert SECRET not in caplog.text
    assert SECRET not in repr(chat) and SECRET not in repr(chat.endpoint)


def test_a_run_whose_model_fails_ends_failed_with_the_reason(
    fake: FakeOpenAI, api_key: str
) -> None:
    fake.answer(
        Answer(404, error_body("The model `fake-model` does not exist", "invalid_request_error"))
    )
    chat, _ = model(fake)
    outcome = execute(ScriptedAgent("a", chat), RUN, Deps(), StopToken())
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("ModelError: model 'fake-model' (tier 'default') at http://")
    assert "refused the request (HTTP 404: The model `fake-model` does not exist)" in outcome.error


def test_an_unreachable_endpoint_is_retried_then_reported(api_key: str) -> None:
    server = FakeOpenAI().start()
    server.stop()  # its port is now closed
    chat, sleeps = model(server, max_retries=1)
    with pytest.raises(ModelError, match="cannot connect"):
        chat.complete(request())
    assert len(sleeps) == 1


def test_a_missing_key_sends_a_placeholder_for_local_servers(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAKE_OPENAI_KEY", raising=False)
    fake.answer(Answer(body=completion("ok")))
    chat, _ = model(fake)
    assert chat.complete(request()).output == "ok"
    assert fake.headers[0]["authorization"] == "Bearer no-key-configured"


def test_requests_are_plain_json(fake: FakeOpenAI, api_key: str) -> None:
    """Nothing in the request is specific to OpenAI's own service (base URL and path only)."""
    fake.answer(Answer(body=completion("ok")))
    chat, _ = model(fake)
    chat.complete(request())
    assert json.loads(json.dumps(fake.requests[0])) == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
