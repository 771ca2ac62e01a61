"""The ``Model`` port on any OpenAI-compatible chat-completions endpoint (official ``openai`` SDK).

OpenAI, vLLM, Ollama, llama.cpp's server and LiteLLM all speak it. One ``complete`` is one
request: the system prompt (the persona battery's, else the agent's), the transcript with every
tool call paired with its result (a resumed run never shows the model a call without one), and
the tools' JSON schemas. A reply with tool calls continues the loop; a reply without ends it
with its text as the output. Token usage comes back in ``ModelReply.usage`` (priced with the
endpoint's per-million-token costs), which the kernel charges to the budget battery.

Failures: 429, 5xx, timeouts and dropped connections are retried with backoff (``retry``);
the SDK's own retries are off so there is one policy, and it is logged. What cannot succeed --
a bad key, an unknown model, a reply that is not a completion, retries exhausted -- raises
``ModelError`` naming the endpoint, and the run fails with that message. The API key is given
to the SDK client only; it is in no message, log line or repr of ours.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from executus_worker.core.ports import ModelReply, ModelRequest, Usage
from executus_worker.errors import ModelError
from executus_worker.models.endpoints import ModelEndpoint
from executus_worker.models.retry import Backoff, retryable
from executus_worker.models.sdk import sdk
from executus_worker.models.wire import parse_completion, to_wire_messages, to_wire_tools

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

# Local servers (Ollama, llama.cpp, vLLM) take any key; the SDK refuses to start without one.
_NO_KEY = "no-key-configured"


def build_client(endpoint: ModelEndpoint) -> openai.OpenAI:
    """An SDK client for the endpoint, with the key from its environment variable."""
    key = endpoint.api_key()
    if key is None:
        log.info("no API key in $%s for %s; sending none", endpoint.api_key_env, endpoint.where)
    client: openai.OpenAI = sdk().OpenAI(
        api_key=key or _NO_KEY,
        base_url=endpoint.base_url,
        timeout=endpoint.timeout_s,
        max_retries=0,  # ours (logged, one policy); see the module docstring
    )
    return client


class OpenAIChatModel:
    """Thread-safe: one instance may serve concurrent runs (the SDK client is thread-safe)."""

    def __init__(
        self,
        endpoint: ModelEndpoint,
        *,
        system_prompt: str | None = None,
        client: openai.OpenAI | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.system_prompt = system_prompt
        self._client = client
        self._lock = threading.Lock()
        self._backoff = backoff or Backoff()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.endpoint.where})"

    @property
    def client(self) -> openai.OpenAI:
        # Built on first use, in the process that uses it (never before a prefork fork).
        with self._lock:
            if self._client is None:
                self._client = build_client(self.endpoint)
            return self._client

    def close(self) -> None:
        """Close the SDK client's connections (it reconnects if used again)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def complete(self, request: ModelRequest) -> ModelReply:
        return self.chat(request)

    def chat(self, request: ModelRequest, *, final: bool = False) -> ModelReply:
        """One model step. ``final``: the model may not call tools; its answer ends the loop."""
        system = request.system_prompt if request.system_prompt is not None else self.system_prompt
        messages, repair = to_wire_messages(system, request.messages)
        if repair.changed:
            log.warning(
                "run %s: transcript repaired before the model call: %d tool call(s) without a "
                "result answered with an error, %d unmatched tool result(s) left out",
                request.run.run_id, repair.missing, repair.dropped,
            )  # fmt: skip
        params: dict[str, object] = {"model": self.endpoint.model, "messages": messages}
        if request.tools:
            params["tools"] = to_wire_tools(request.tools)
            if final:
                params["tool_choice"] = "none"
        body = self._post(request, params)
        parsed = parse_completion(body, call_id_base=str(len(request.messages)))
        message = parsed.message
        if final and message.tool_calls:
            # The server ignored tool_choice: the calls would have no results, so drop them.
            message = message.model_copy(update={"tool_calls": ()})
        if parsed.finish_reason == "length" and not message.tool_calls:
            log.warning("run %s: the model's answer was cut at its token limit", request.run.run_id)
        usage = Usage(
            input_tokens=parsed.input_tokens,
            output_tokens=parsed.output_tokens,
            cost_usd=self.endpoint.cost_usd(parsed.input_tokens, parsed.output_tokens),
        )
        done = not message.tool_calls
        return ModelReply(
            message=message, done=done, output=message.content if done else None, usage=usage
        )

    def _post(self, request: ModelRequest, params: dict[str, object]) -> bytes:
        """The raw reply body; retries what is worth retrying, ModelError for the rest."""
        api = sdk()
        attempts = self.endpoint.max_retries + 1
        for attempt in range(attempts):
            try:
                raw = self.client.chat.completions.with_raw_response.create(**params)  # type: ignore[call-overload]
                body: bytes = raw.http_response.content
                return body
            except api.APIError as exc:
                if not retryable(exc):
                    raise ModelError(self._refused(exc)) from None
                delay_s = self._backoff.delay_s(attempt, exc) if attempt + 1 < attempts else None
                if delay_s is None:
                    raise ModelError(self._gave_up(exc, attempt + 1)) from None
                log.warning(
                    "run %s: %s (attempt %d of %d); retrying in %.2fs",
                    request.run.run_id, self._what(exc), attempt + 1, attempts, delay_s,
                )  # fmt: skip
                self._sleep(delay_s)
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- messages (never the key: the server's own message, the status, where) -----------

    def _what(self, exc: openai.APIError) -> str:
        api = sdk()
        if isinstance(exc, api.APITimeoutError):
            return f"no answer within {self.endpoint.timeout_s:g}s"
        if isinstance(exc, api.APIConnectionError):
            return f"cannot connect: {exc.__cause__ or exc.message}"
        status = getattr(exc, "status_code", None)
        return f"HTTP {status}: {_server_message(exc)}"

    def _refused(self, exc: openai.APIError) -> str:
        where = self.endpoint.where
        if isinstance(exc, sdk().AuthenticationError):
            return (
                f"{where} rejected the API key (HTTP 401; the key is read from "
                f"${self.endpoint.api_key_env}): {_server_message(exc)}"
            )
        return f"{where} refused the request ({self._what(exc)})"

    def _gave_up(self, exc: openai.APIError, attempts: int) -> str:
        return f"{self.endpoint.where} failed {attempts} time(s), giving up: {self._what(exc)}"


def _server_message(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
    if isinstance(body, str) and body:
        return body[:500]
    return exc.message[:500]
