"""Beat test helpers: schedule store, run store, client and fake clock on the real Redis.

The enqueue path is the real one (``ClientEnqueuer`` -> ``Client.submit`` -> ``RedisStore``
registration, idempotent on run id); only the broker publish is recorded instead of sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from beat.enqueue import ClientEnqueuer
from beat.retention import StateRetention
from beat.ticker import Enqueuer, RetryPolicy, Ticker
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.client import Client
from executus_worker.core.models import RunRecord, RunRequest
from executus_worker.schedules.catalog import JobCatalog
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.source_toml import TomlJobFile
from executus_worker.schedules.store import ScheduleStore
from executus_worker.settings import Settings

PREFIX = "t"


class FakeClock:
    """Epoch seconds that only move when a test says so (thread-safe enough: one float)."""

    def __init__(self, start: datetime) -> None:
        self.t = start.timestamp()

    def __call__(self) -> float:
        return self.t

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()

    def advance(self, seconds: float) -> None:
        self.t += seconds


class RecordingPublisher:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self._lock = threading.Lock()

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        with self._lock:
            self.sent.append(run_id)

    def close(self) -> None:
        pass


class World:
    def __init__(self, client: redis.Redis, url: str, start: datetime) -> None:
        self.client = client
        self.url = url
        self.clock = FakeClock(start)
        self.store = ScheduleStore(client, key_prefix=PREFIX)
        self.runs = RedisStore(client, key_prefix=PREFIX)
        self.publisher = RecordingPublisher()
        settings = Settings(redis_url=url, key_prefix=PREFIX)
        self.client_api = Client(settings, store=self.runs, publisher=self.publisher)
        self.enqueuer = ClientEnqueuer(self.client_api)
        self.schedule_file: Path | None = None

    def ticker(
        self,
        enqueuer: Enqueuer | None = None,
        *,
        client: redis.Redis | None = None,
        retry: RetryPolicy | None = None,
        retention: Callable[[ScheduleStore], StateRetention] | None = None,
    ) -> Ticker:
        """A beat process's ticker; ``client`` gives it its own connection (threads)."""
        conn = client or self.client
        store = ScheduleStore(conn, key_prefix=PREFIX)
        schedule_file = TomlJobFile(self.schedule_file) if self.schedule_file else None
        return Ticker(
            catalog=JobCatalog(store, schedule_file),
            store=store,
            runs=RedisStore(conn, key_prefix=PREFIX),
            enqueuer=enqueuer or self.enqueuer,
            clock=self.clock,
            retry=retry,
            retention=retention(store) if retention is not None else None,
        )

    def flaky_enqueuer(
        self, *, register_failures: int = 0, publish_failures: int = 0
    ) -> tuple[ClientEnqueuer, FlakyStore, FlakyPublisher]:
        """The real enqueue path, with Redis registration and broker publish failing first."""
        store = FlakyStore(self.client, register_failures)
        publisher = FlakyPublisher(self.publisher, publish_failures)
        settings = Settings(redis_url=self.url, key_prefix=PREFIX)
        return ClientEnqueuer(Client(settings, store=store, publisher=publisher)), store, publisher

    def add(self, name: str, cron: str, **fields: object) -> JobSpec:
        run = fields.pop("run", {"agent": "demo.counter", "input": {"steps": 1}})
        spec = JobSpec.model_validate({"name": name, "cron": cron, "run": run, **fields})
        self.store.add_job(spec, replace=True)
        return spec

    def run_ids(self, prefix: str = "sched:") -> list[str]:
        return sorted(
            r.run_id for r in self.runs.list_runs(limit=10_000) if r.run_id.startswith(prefix)
        )


class FailingEnqueuer:
    """Raises for the named jobs, delegates the rest; counts calls per job."""

    def __init__(
        self, inner: Enqueuer, failing: set[str], exc: Callable[[], BaseException]
    ) -> None:
        self.inner = inner
        self.failing = failing
        self.exc = exc
        self.calls: dict[str, int] = {}

    def enqueue(self, request: RunRequest, run_id: str) -> bool:
        job = run_id.split(":")[1]
        self.calls[job] = self.calls.get(job, 0) + 1
        if job in self.failing:
            raise self.exc()
        return self.inner.enqueue(request, run_id)


class FlakyStore(RedisStore):
    """The real run store whose registration fails like a Redis blip the first N times."""

    def __init__(self, client: redis.Redis, failures: int) -> None:
        super().__init__(client, key_prefix=PREFIX)
        self.failures = failures
        self.calls = 0

    def register_enqueued(self, request: RunRequest, **kwargs: Any) -> tuple[RunRecord, bool]:
        # What the client calls on a RedisStore (register, event and publish in one script).
        self.calls += 1
        if self.calls <= self.failures:
            raise redis.ConnectionError(f"injected: register failure {self.calls}")
        return super().register_enqueued(request, **kwargs)


class FlakyPublisher:
    """Records like ``RecordingPublisher``; the first N publishes fail like a broker blip."""

    def __init__(self, inner: RecordingPublisher, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise redis.ConnectionError(f"injected: publish failure {self.calls}")
        self.inner.publish(run_id, request_json, queue=queue)

    def close(self) -> None:
        pass
