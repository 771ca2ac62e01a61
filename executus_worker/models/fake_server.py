"""A fake OpenAI-compatible chat-completions server over real HTTP, for tests (ours and yours).

    with FakeOpenAI(brain) as fake:          # listens on 127.0.0.1, a free port
        settings = Settings(model_base_url=fake.base_url, model_name="fake-model")
        ...                                   # run an agent; fake.requests has what it sent

It serves from a thread of the calling process, so a worker subprocess can reach it too. Each
POST to ``<base_url>/chat/completions`` is answered by the next scripted ``Answer`` (see
``answer``), or once the script is used up by ``brain(request_body)``. A brain that derives its
reply from the transcript it is sent behaves the same after a resume, like a real model at
temperature 0. Every request is recorded with its headers. Shipped in the package, like the
scripted model, so users can test their declared agents without a network.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # JSON-encoded unless raw is set
    raw: bytes | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


Brain = Callable[[dict[str, Any]], Answer]


def completion(
    content: str | None = "",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """A chat.completion body as OpenAI sends it."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def tool_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


class FakeOpenAI:
    def __init__(self, brain: Brain | None = None) -> None:
        self.brain = brain
        self.script: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake server is not started")
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def answer(self, *answers: Answer) -> FakeOpenAI:
        with self._lock:
            self.script.extend(answers)
        return self

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                answer = fake._next(body, dict(self.headers.items()), self.path)
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                payload = answer.raw if answer.raw is not None else json.dumps(answer.body).encode()
                try:
                    self.send_response(answer.status)
                    content_type = "text/plain" if answer.raw is not None else "application/json"
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(payload)))
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def _next(self, body: dict[str, Any], headers: dict[str, str], path: str) -> Answer:
        with self._lock:
            self.requests.append(body)
            self.headers.append({k.lower(): v for k, v in headers.items()})
            if not path.endswith("/chat/completions"):
                return Answer(404, error_body(f"no route {path}", "invalid_request_error"))
            if self.script:
                return self.script.pop(0)
        if self.brain is not None:
            return self.brain(body)
        return Answer(500, error_body("the fake server has no answer scripted", "server_error"))
