"""The chat-completions wire format: our transcript out, the endpoint's reply back in.

Replies are parsed with our own lenient model of the few fields we use, not the SDK's types:
OpenAI-compatible servers (vLLM, Ollama, llama.cpp, LiteLLM) differ in the fields they fill,
and the SDK accepts anything without validating it -- a reply that is not a completion must
fail here with a message saying what was wrong, not as an AttributeError three calls later.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from executus_worker.core.models import Message, ToolCall
from executus_worker.core.ports import ToolSpec
from executus_worker.errors import ModelError
from executus_worker.models.tools import RAW_ARGUMENTS_KEY
from executus_worker.models.transcript import Repair, pair_tool_results

WireMessage = dict[str, Any]


def to_wire_messages(
    system_prompt: str | None, messages: Sequence[Message]
) -> tuple[list[WireMessage], Repair]:
    """The request's ``messages``: the system prompt, then the transcript with every tool call
    paired with its result (see ``transcript``)."""
    repair = pair_tool_results(messages)
    wire: list[WireMessage] = []
    if system_prompt:
        wire.append({"role": "system", "content": system_prompt})
    for message in repair.messages:
        wire.append(_wire_message(message))
    return wire, repair


def _wire_message(message: Message) -> WireMessage:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            # Null, not "", beside tool calls: what OpenAI itself sends, and what strict
            # servers expect.
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments_text(call)},
                }
                for call in message.tool_calls
            ],
        }
    # `name` is not sent: it marks our own seed messages, and servers restrict its alphabet.
    return {"role": message.role, "content": message.content}


def _arguments_text(call: ToolCall) -> str:
    raw = call.arguments.get(RAW_ARGUMENTS_KEY)
    if isinstance(raw, str) and len(call.arguments) == 1:
        return raw  # what the model sent, verbatim
    return json.dumps(call.arguments, separators=(",", ":"), ensure_ascii=False)


def to_wire_tools(specs: Sequence[ToolSpec]) -> list[WireMessage]:
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.parameters or {"type": "object", "properties": {}},
            },
        }
        for spec in specs
    ]


# -- replies ----------------------------------------------------------------------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Function(_Loose):
    name: str = Field(min_length=1)
    arguments: str | dict[str, Any] | None = None


class _ToolCall(_Loose):
    id: str | None = None
    type: str | None = "function"
    function: _Function


class _ReplyMessage(_Loose):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(_Loose):
    message: _ReplyMessage
    finish_reason: str | None = None


class _Usage(_Loose):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)


class _Completion(_Loose):
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


class ParsedReply(BaseModel):
    model_config = ConfigDict(frozen=True)

    message: Message
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


def parse_completion(body: bytes, *, call_id_base: str) -> ParsedReply:
    """The first choice of a chat.completion body; ModelError says what is wrong with it.

    ``call_id_base`` names tool calls that come without an id (some servers omit them): it is
    derived from the transcript position, so a replayed step gets the same ids.
    """
    try:
        completion = _Completion.model_validate_json(body)
    except ValidationError as exc:
        problems = _problems(exc, body)
        raise ModelError(f"the endpoint's reply is not a chat completion: {problems}") from None
    choice = completion.choices[0]
    usage = completion.usage or _Usage()
    calls = [_tool_call(call, index, call_id_base) for index, call in enumerate(
        choice.message.tool_calls or ()
    )]  # fmt: skip
    content = choice.message.content
    if content is None:
        content = choice.message.refusal or ""
    message = Message(role="assistant", content=content, tool_calls=tuple(_unique_ids(calls)))
    return ParsedReply(
        message=message,
        finish_reason=choice.finish_reason,
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
    )


def _tool_call(call: _ToolCall, index: int, call_id_base: str) -> ToolCall:
    arguments: dict[str, Any]
    raw = call.function.arguments
    if raw is None or raw == "":
        arguments = {}
    elif isinstance(raw, dict):
        arguments = raw  # a few servers send an object instead of its JSON text
    else:
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        # Not a JSON object: keep the text so the model is told, and the transcript is exact.
        arguments = decoded if isinstance(decoded, dict) else {RAW_ARGUMENTS_KEY: raw}
    return ToolCall(
        id=call.id or f"call_{call_id_base}_{index}", name=call.function.name, arguments=arguments
    )


def _unique_ids(calls: list[ToolCall]) -> list[ToolCall]:
    """Results are matched by call id: two calls of one reply must not share one."""
    seen: set[str] = set()
    out = []
    for index, call in enumerate(calls):
        unique = call.model_copy(update={"id": f"{call.id}_{index}"}) if call.id in seen else call
        seen.add(unique.id)
        out.append(unique)
    return out


def _problems(exc: ValidationError, body: bytes) -> str:
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        preview = body[:200].decode("utf-8", "replace")
        return f"not JSON ({preview!r})"
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<body>'}: {err['msg']}" for err in errors[:5]
    )
