"""A real Redis Sentinel group on loopback: a master, one replica and N sentinels.

Each server is a redis-server process on a free port, stopped by pid. ``failover()`` does
what an operator's ``SENTINEL FAILOVER`` does and waits until the sentinels name the new
master and the old one has become its replica.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import redis

from executus_worker.embedded import find_redis_server, free_port, redis_answers

from .redis_server import RedisServer, RedisUnavailable

MASTER_NAME = "executus-ha"


def _until(what: str, check: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RedisUnavailable(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


class SentinelGroup:
    def __init__(self, directory: Path, *, sentinels: int = 2) -> None:
        self.dir = directory
        self.master = RedisServer(directory / "a")
        self.replica = RedisServer(directory / "b")
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """kombu's form: one sentinel:// per sentinel, separated by ';'."""
        return ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(port=self.sentinel_ports[index], socket_timeout=5)

    def master_port(self) -> int:
        host_port = self.sentinel().sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(host_port[1])

    def start(self) -> SentinelGroup:
        binary = find_redis_server()
        if binary is None:
            raise RedisUnavailable("no redis-server binary")
        self.master.start()
        self.replica.start()
        self.replica.client().replicaof("127.0.0.1", self.master.port)
        _until(
            "the replica to sync",
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            15,
        )
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f'dir "{self.dir}"\nlogfile "{self.dir}/sentinel-{port}.log"\n'
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 2000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [binary.path, str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for index, port in enumerate(self.sentinel_ports):
            _until(f"sentinel on {port}", lambda p=port: redis_answers("127.0.0.1", p), 10)
            # A forced failover needs a replica the sentinel has seen as healthy.
            _until(
                f"sentinel {port} to see the replica",
                lambda i=index: any(
                    "s_down" not in r["flags"]
                    for r in self.sentinel(i).sentinel_slaves(MASTER_NAME)
                ),
                15,
            )
        return self

    def force_failover(self, timeout_s: float = 30) -> int:
        """``SENTINEL FAILOVER``; return the new master's port once every sentinel names it.

        The old master is still up and still a master: the sentinels turn it into a replica
        only when they next poll it (up to 10 s later). Until then, clients that kept their
        connections to it write there -- and those writes are dropped when it converts."""
        old = self.master_port()
        # NOGOODSLAVE: the sentinel has not yet re-read a healthy replica (after an earlier
        # failover the demoted master needs a few INFO polls to count as one again).
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.sentinel().execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
                break
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        _until(
            "every sentinel to name the new master",
            lambda: all(
                int(self.sentinel(i).sentinel_get_master_addr_by_name(MASTER_NAME)[1]) != old
                for i in range(len(self.sentinel_ports))
            ),
            timeout_s,
        )
        self._demoted = self.master if old == self.master.port else self.replica
        return self.master_port()

    def wait_demoted(self, timeout_s: float = 30) -> None:
        """Until the old master has become a replica of the new one."""
        _until(
            "the old master to become a replica",
            lambda: self._demoted.client().info("replication")["role"] == "slave",
            timeout_s,
        )

    def failover(self, timeout_s: float = 30) -> int:
        port = self.force_failover(timeout_s)
        self.wait_demoted(timeout_s)
        return port

    def stop(self) -> None:
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._sentinels.clear()
        for server in (self.replica, self.master):
            with contextlib.suppress(Exception):
                server.stop()
