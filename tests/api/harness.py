"""A real `executus-worker api` process on a free port, and a small HTTP client for it.

The server is the console script itself (uvicorn, real sockets), configured by EXECUTUS_*
variables; tests talk to it with ``http.client`` so every byte crosses a real connection.
Each server gets its own key prefix and queue, so servers share the session's redis-server.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executus_worker.embedded import free_port

EXECUTUS = str(Path(sys.executable).with_name("executus-worker"))
TOKEN = "test-token-" + "x" * 24


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object every failure carries."""
        document = self.json()
        assert set(document) == {"error"}, document
        error: dict[str, Any] = document["error"]
        assert error["code"] and error["message"], error
        return error


@dataclass
class SseEvent:
    event: str
    data: Any
    id: str | None = None


@dataclass
class ApiServer:
    redis_url: str
    log_path: Path
    token: str | None = TOKEN
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.prefix = f"api{tag}"
        self.queue = f"q-api-{tag}"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTUS_")}
        env |= {
            "EXECUTUS_REDIS_URL": self.redis_url,
            "EXECUTUS_KEY_PREFIX": self.prefix,
            "EXECUTUS_DEFAULT_QUEUE": self.queue,
            "EXECUTUS_API_PORT": str(self.port),
        }
        if self.token is not None:
            env["EXECUTUS_API_TOKEN"] = self.token
        return env | self.env

    def start(self, timeout_s: float = 60) -> ApiServer:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [EXECUTUS, "api", "--host", self.host, "--log-level", "info"],
                env=self.process_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"api exited early:\n{self.log()[-3000:]}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/healthz", auth=False).status == 200:
                    return self
            if time.monotonic() > deadline:
                raise AssertionError(f"api not up after {timeout_s}s:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- HTTP ----------------------------------------------------------------------------

    def headers(self, auth: bool = True) -> dict[str, str]:
        if auth and self.token is not None:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def connect(self, timeout_s: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Reply:
        sent = self.headers(auth) | (headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()

    @contextlib.contextmanager
    def stream(
        self, path: str, *, headers: dict[str, str] | None = None, timeout_s: float = 60
    ) -> Iterator[tuple[http.client.HTTPResponse, Iterator[SseEvent | str]]]:
        """Open an event stream: the response and its events (comments as plain strings)."""
        conn = self.connect(timeout_s)
        try:
            conn.request("GET", path, headers=self.headers() | (headers or {}))
            response = conn.getresponse()
            yield response, read_events(response)
        finally:
            conn.close()


def read_events(response: http.client.HTTPResponse) -> Iterator[SseEvent | str]:
    """Parse ``text/event-stream`` as a browser would (the subset the API sends)."""
    fields: dict[str, str] = {}
    while True:
        raw = response.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n")
        if line == "":
            if "event" in fields or "data" in fields:
                yield SseEvent(fields.get("event", "message"), json.loads(fields["data"]),
                               fields.get("id"))  # fmt: skip
            fields = {}
        elif line.startswith(":"):
            yield line
        else:
            name, _, value = line.partition(": ")
            if name != "retry":
                fields[name] = value
