"""Real `celery -A executus_worker.worker worker` processes against a private Redis.

Each worker runs in its own session; tests signal the main pid only (as Kubernetes with an
exec-form entrypoint, or systemd with KillMode=mixed, would). Each test gets its own key
prefix and queue, so tests share one redis-server without seeing each other. The broker is
that Redis, or RabbitMQ when a ``broker_url`` is given (run state stays in Redis). Run state
may be on a Redis Cluster (a ``redis+cluster://`` URL); the broker is then another Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from executus_worker.broker_publish import KombuPublisher
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRecord, RunRequest, RunStatus
from executus_worker.publish import BatchPublisher
from executus_worker.redis_connect import connect_state, is_cluster

HERE = Path(__file__).resolve().parent
CELERY = str(Path(sys.executable).with_name("celery"))
AGENTS_TOML = """
[agents]
"e2e.counter" = "e2e_agents:counter"
"e2e.phased" = "e2e_agents:phased"
"e2e.poison" = "e2e_agents:poison"
"e2e.stuck" = "e2e_agents:stuck"
"""


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may contain spaces and parentheses: fields follow the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class Worker:
    def __init__(self, name: str, pool: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.pool = pool
        self.proc = proc
        self.log = log
        self.signalled_at: float | None = None
        self._children: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hostname(self) -> str:
        """The node name remote-control commands address (``-n name@%h``)."""
        return f"{self.name}@{socket.gethostname()}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = 30) -> Worker:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.text()[-3000:]}")
            return " ready." in self.text()

        wait_for(f"worker {self.name} ready", ready, timeout_s)
        self._children.update(self.children())
        return self

    def children(self) -> list[int]:
        return _children(self.pid)

    def pids(self) -> set[int]:
        """The main pid and every child pid seen so far (prefork replaces children)."""
        self._children.update(self.children())
        return {self.pid, *self._children}

    def signal(self, signum: int) -> None:
        self._children.update(self.children())
        self.signalled_at = time.monotonic()
        os.kill(self.pid, signum)

    def wait_exit(self, timeout_s: float = 30) -> float:
        """Seconds from the last signal to the main process's exit."""
        self.proc.wait(timeout_s)
        assert self.signalled_at is not None
        return time.monotonic() - self.signalled_at

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Teardown: whatever state the test left, leave no process of ours behind."""
        self._children.update(self.children())
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        for child in self._children:
            # Only if that pid is still one of ours (a forked child carries our unique -n name):
            # a recycled pid must never be killed.
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if self.name.encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)


@dataclass
class Cluster:
    """One test's world: settings, workers, the store and the step log."""

    redis_url: str
    tmp_path: Path
    settings: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    broker_url: str | None = None  # None: the Redis of run state; redis:// or amqp://
    # Redis Sentinel: the master group's name for a sentinel:// redis_url, and a plain Redis
    # for the step log (a failover may drop the last writes; the verdict must not lose any).
    sentinel_master: str | None = None
    steps_url: str | None = None

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.prefix = f"e2e{tag}"
        self.queue = f"q-{tag}"
        self.client = connect_state(self.redis_url, sentinel_master=self.sentinel_master)
        # The broker's Redis: the run state's, or the given one (a cluster cannot be a broker).
        self.broker: redis.Redis | None = None
        if self.broker_url and self.broker_url.startswith("redis"):
            self.broker = redis.Redis.from_url(self.broker_url)
        elif not self.broker_url:
            assert isinstance(self.client, redis.Redis), "a cluster needs a separate broker_url"
            self.broker = self.client
        if is_cluster(self.redis_url) and not self.steps_url:
            self.steps_url = self.broker_url
        self.steps_client = (
            redis.Redis.from_url(self.steps_url) if self.steps_url else self.broker or self.client
        )
        self.store = RedisStore(self.client, key_prefix=self.prefix)
        self.publisher: BatchPublisher | KombuPublisher = (
            BatchPublisher(self.broker) if self.broker else KombuPublisher(self.broker_url or "")
        )
        agents = self.tmp_path / "agents.toml"
        agents.write_text(AGENTS_TOML)
        self.base_env = {
            "EXECUTUS_REDIS_URL": self.redis_url,
            "EXECUTUS_KEY_PREFIX": self.prefix,
            "EXECUTUS_DEFAULT_QUEUE": self.queue,
            "EXECUTUS_AGENTS_FILE": str(agents),
            "EXECUTUS_LEASE_TTL_S": "2",
            "EXECUTUS_SWEEP_INTERVAL_S": "0.5",
            "EXECUTUS_SHUTDOWN_GRACE_S": "30",
            "EXECUTUS_QUEUED_TIMEOUT_S": "600",
            "E2E_STEPS_URL": self.steps_url or self.redis_url,
        }
        if self.sentinel_master:
            self.base_env["EXECUTUS_SENTINEL_MASTER"] = self.sentinel_master
        if self.broker_url:
            self.base_env["EXECUTUS_BROKER_URL"] = self.broker_url

    @property
    def on_rabbitmq(self) -> bool:
        return self.broker is None

    # -- workers ---------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
        env.update(self.base_env)
        env.update(self.settings)
        env.update(overrides)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        return env

    def start(
        self,
        pool: str,
        *,
        concurrency: int = 2,
        ready: bool = True,
        args: Sequence[str] = (),
        **env: str,
    ) -> Worker:
        name = f"{pool}{len(self.workers)}-{self.prefix}"
        argv = [
            CELERY, "-A", "executus_worker.worker", "worker", "-P", pool, "-l", "info",
            "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        if pool != "solo":
            argv += ["-c", str(concurrency)]
        argv += args
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                argv,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # signals from the test reach the main pid only
            )
        worker = Worker(name, pool, proc, log)
        self.workers.append(worker)
        return worker.wait_ready() if ready else worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if isinstance(self.publisher, KombuPublisher):
            self.publisher.close()  # the session's vhost, queues and all, is deleted at its end
        # A fault test may leave its Redis stopped; cleanup must not hide the test's result.
        with contextlib.suppress(redis.RedisError):
            if self.broker is not None:
                self.broker.delete(self.queue)
        for client in {
            id(c): c for c in (self.client, self.broker, self.steps_client) if c
        }.values():
            client.close()

    # -- runs ------------------------------------------------------------------------

    def register(
        self,
        agent: str,
        run_id: str | None = None,
        *,
        metadata: dict[str, str] | None = None,
        **input: Any,
    ) -> RunRequest:
        run_id = run_id or f"run-{uuid.uuid4().hex[:8]}"
        request = RunRequest(run_id=run_id, agent=agent, input=input, metadata=metadata or {})
        self.store.register(request, run_id=run_id, queue=self.queue, now=time.time())
        return request

    def publish(self, request: RunRequest, times: int = 1) -> None:
        assert request.run_id is not None
        for _ in range(times):
            self.publisher.publish(request.run_id, request.to_json(), queue=self.queue)

    def submit(
        self,
        agent: str,
        run_id: str | None = None,
        *,
        metadata: dict[str, str] | None = None,
        **input: Any,
    ) -> str:
        request = self.register(agent, run_id, metadata=metadata, **input)
        self.publish(request)
        assert request.run_id is not None
        return request.run_id

    def record(self, run_id: str) -> RunRecord:
        record = self.store.get(run_id)
        assert record is not None, f"no record for {run_id}"
        return record

    def wait_status(self, run_id: str, *statuses: RunStatus, timeout_s: float = 30) -> RunRecord:
        wanted = set(statuses)
        return wait_for(
            f"run {run_id} to become {sorted(wanted)}",
            lambda: (r := self.store.get(run_id)) is not None and r.status in wanted and r,
            timeout_s,
        )

    def transcript(self, run_id: str) -> list[str]:
        return [m.content for m in self.store.transcript(run_id)]

    def steps(self, run_id: str, ev: str | None = None) -> list[dict[str, Any]]:
        raw = self.steps_client.lrange(f"{self.prefix}:e2e:steps", 0, -1)
        events = [json.loads(item) for item in raw]
        return [e for e in events if e["run"] == run_id and (ev is None or e["ev"] == ev)]

    def ended(self, run_id: str, epoch: int | None = None) -> list[str]:
        return [e["msg"] for e in self.steps(run_id, "end") if epoch is None or e["epoch"] == epoch]

    def wait_steps_ended(self, run_id: str, n: int, timeout_s: float = 30) -> None:
        wait_for(f"{n} steps of {run_id}", lambda: len(self.ended(run_id)) >= n, timeout_s)

    def keys_without_ttl(self, run_id: str) -> list[str]:
        keys = self.client.keys(f"{self.store.keys.run_base(run_id)}:*")
        return [k.decode() for k in keys if self.client.ttl(k) == -1]

    def lease_exists(self, run_id: str) -> bool:
        return bool(self.client.exists(self.store.keys.lease(run_id)))

    def redeliver_unacked(self) -> int:
        """Do what kombu's visibility-timeout restore does to our queue's unacked messages:
        push them back onto the queue (the original delivery stays unacked). Redis broker only:
        RabbitMQ redelivers only when the consumer's channel goes (the SIGKILL tests)."""
        assert self.broker is not None, "redeliver_unacked needs the Redis broker"
        count = 0
        for raw in self.broker.hvals("unacked"):
            message, _exchange, routing_key = json.loads(raw)
            if routing_key != self.queue:
                continue
            message["properties"]["delivery_info"]["redelivered"] = True
            self.broker.lpush(self.queue, json.dumps(message))
            count += 1
        return count


def step_numbers(messages: Iterable[str]) -> list[int]:
    return [int(m.rsplit(" ", 1)[1]) for m in messages]


def counter_transcript(n: int) -> list[str]:
    return [f"step {i}" for i in range(1, n + 1)]
