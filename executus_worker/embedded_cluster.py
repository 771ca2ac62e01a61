"""A private Redis Cluster on loopback (tests and benchmarks): N masters, no replicas.

Each master is a ``redis-server --cluster-enabled yes`` on a free port (its cluster bus on
another free port, ``cluster-port``, so neither needs port + 10000 to be free) in its own
directory; ``redis-cli --cluster create`` assigns the 16,384 slots in even ranges. Every
process is stopped by its pid. Persistence is off unless asked for (``aof=True``: what
ops/redis.conf runs, AOF with ``appendfsync everysec``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from executus_worker.embedded import find_redis_server, free_port, redis_answers


class ClusterUnavailable(RuntimeError):
    """No redis-server or redis-cli, or the cluster would not form."""


class LocalCluster:
    def __init__(self, directory: Path, *, masters: int = 3, aof: bool = False) -> None:
        self.dir = directory
        self.aof = aof
        self.ports = [free_port() for _ in range(masters)]
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The seed URL the package takes (``redis+cluster://``, every master listed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.ports[0], socket_timeout=5)

    def node(self, index: int) -> redis.Redis:
        return redis.Redis(port=self.ports[index], socket_timeout=5)

    def start(self, timeout_s: float = 30.0) -> LocalCluster:
        binary = find_redis_server()
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            raise ClusterUnavailable("a cluster needs redis-server and redis-cli on PATH")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            for port in self.ports:
                self._start_master(binary.path, port)
            deadline = time.monotonic() + timeout_s
            for port in self.ports:
                while not redis_answers("127.0.0.1", port):
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise ClusterUnavailable(f"redis-server on {port} did not answer")
                    time.sleep(0.02)
            nodes = [f"127.0.0.1:{p}" for p in self.ports]
            made = subprocess.run(
                [cli, "--cluster", "create", *nodes, "--cluster-yes"],
                capture_output=True,
                timeout=timeout_s,
                check=False,
            )
            if made.returncode != 0:
                raise ClusterUnavailable(
                    f"redis-cli --cluster create failed ({made.returncode}): "
                    + (made.stdout + made.stderr).decode(errors="replace")[-2000:]
                )
            self._wait_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_master(self, binary: str, port: int) -> None:
        home = self.dir / str(port)
        home.mkdir()
        argv = [
            binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(home),
            "--daemonize", "no", "--logfile", str(home / "redis.log"),
            "--cluster-enabled", "yes", "--cluster-config-file", str(home / "nodes.conf"),
            "--cluster-port", str(free_port()), "--cluster-node-timeout", "5000",
            "--appendonly", "yes" if self.aof else "no", "--appendfsync", "everysec",
            "--save", "", "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        self._procs.append(
            subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        )

    def _check_alive(self) -> None:
        for proc, port in zip(self._procs, self.ports, strict=False):
            if proc.poll() is not None:
                log = self.dir / str(port) / "redis.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise ClusterUnavailable(f"redis-server on {port} exited:\n{tail}")

    def _wait_ok(self, deadline: float) -> None:
        """Every master says cluster_state:ok and knows all slots (gossip takes a moment)."""
        pending = list(range(len(self.ports)))
        while pending:
            self._check_alive()
            index = pending[0]
            try:
                with self.node(index) as node:
                    info = node.cluster("info")
            except redis.RedisError:
                info = {}
            if info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"cluster not ok on {self.ports[index]}: {info}")
            time.sleep(0.05)

    def flush(self) -> None:
        for index in range(len(self.ports)):
            with self.node(index) as node:
                node.flushall()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Teardown by pid, whatever state the test left."""
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
