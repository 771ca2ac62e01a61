"""Recovery: sweep, batch re-publish, the scan lock, bad records, and the MainProcess loop."""

from __future__ import annotations

import time
from collections.abc import Iterable

import fakeredis
import pytest
import redis

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRequest, RunStatus
from executus_worker.core.stop import StopReason
from executus_worker.publish import BatchPublisher, RunMessage
from executus_worker.worker.recovery import Recovery, RecoveryLoop, ScanLock
from executus_worker.worker.shutdown import DrainToken


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class ListPublisher:
    def __init__(self, fail: bool = False, depth: int | None = 0) -> None:
        self.batches: list[list[RunMessage]] = []
        self.fail = fail
        self.depth = depth  # what queue_depth answers; None: it raises
        self.depth_asked: list[str] = []

    def queue_depth(self, queue: str) -> int:
        self.depth_asked.append(queue)
        if self.depth is None:
            raise ConnectionError("broker down")
        return self.depth

    def publish_many(self, messages: Iterable[RunMessage]) -> int:
        if self.fail:
            raise ConnectionError("broker down")
        batch = list(messages)
        self.batches.append(batch)
        return len(batch)

    @property
    def run_ids(self) -> list[str]:
        return [m.run_id for batch in self.batches for m in batch]


def interrupted_runs(store: MemoryStore | RedisStore, n: int, clock: Clock) -> list[str]:
    ids = []
    for i in range(n):
        run_id = f"r{i:03d}"
        request = RunRequest(run_id=run_id, agent="demo.counter", model_tier="fast")
        store.register(request, run_id=run_id, queue="fast-q", now=clock())
        claim = store.claim(run_id, owner="w:1", lease_ttl_s=30, max_attempts=5, now=clock())
        store.interrupt(run_id, fence=claim.fence, now=clock())
        ids.append(run_id)
    return ids


def test_a_sweep_republishes_every_interrupted_run_on_its_own_queue_in_batches() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    ids = interrupted_runs(store, 25, clock)
    publisher = ListPublisher()
    report = Recovery(store, publisher, queued_timeout_s=60, batch=10, clock=clock).sweep()
    assert (report.scanned, report.requeued, report.published) == (25, 25, 25)
    assert sorted(publisher.run_ids) == ids
    assert [len(b) for b in publisher.batches] == [10, 10, 5]
    message = publisher.batches[0][0]
    assert message.queue == "fast-q"
    assert RunRequest.model_validate_json(message.request_json).run_id == message.run_id
    record = store.get(ids[0])
    assert record is not None and record.status is RunStatus.QUEUED


def test_a_second_sweep_right_after_finds_nothing_to_do() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    interrupted_runs(store, 5, clock)
    publisher = ListPublisher()
    recovery = Recovery(store, publisher, queued_timeout_s=60, clock=clock)
    recovery.sweep()
    assert recovery.sweep().requeued == 0
    assert len(publisher.run_ids) == 5


def test_a_run_whose_lease_expired_is_recovered_but_a_live_one_is_not() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    for run_id, ttl in (("dead-worker", 1), ("live-worker", 100)):
        store.register(RunRequest(agent="demo.counter"), run_id=run_id, queue="q", now=clock())
        store.claim(run_id, owner="w:1", lease_ttl_s=ttl, max_attempts=5, now=clock())
    clock.t += 5
    publisher = ListPublisher()
    Recovery(store, publisher, queued_timeout_s=60, clock=clock).sweep()
    assert publisher.run_ids == ["dead-worker"]


def test_a_failed_publish_is_reported_and_the_sweep_goes_on() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    interrupted_runs(store, 3, clock)
    report = Recovery(store, ListPublisher(fail=True), queued_timeout_s=60, clock=clock).sweep()
    assert (report.requeued, report.published, report.publish_failed) == (3, 0, 3)
    clock.t += 61  # the queued-timeout path picks them up again later
    publisher = ListPublisher()
    Recovery(store, publisher, queued_timeout_s=60, clock=clock).sweep()
    assert len(publisher.run_ids) == 3


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_one_bad_record_is_reported_and_skipped(fake: fakeredis.FakeRedis) -> None:
    clock = Clock()
    store = RedisStore(fake, key_prefix="t")
    ids = interrupted_runs(store, 3, clock)
    fake.hset(store.keys.rec(ids[1]), "status", "exploded")
    publisher = ListPublisher()
    report = Recovery(store, publisher, queued_timeout_s=60, clock=clock).sweep()
    assert sorted(publisher.run_ids) == [ids[0], ids[2]]
    assert [run_id for run_id, _ in report.errors] == [ids[1]]
    assert "unknown status exploded" in report.errors[0][1]


def test_the_scan_lock_makes_a_concurrent_sweep_skip(fake: fakeredis.FakeRedis) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    interrupted_runs(store, 2, clock)
    lock = ScanLock(fake, "t:recover:lock")
    assert lock.acquire("someone-else")
    publisher = ListPublisher()
    report = Recovery(store, publisher, queued_timeout_s=60, lock=lock, clock=clock).sweep()
    assert report.skipped_locked and publisher.run_ids == []
    assert lock.release("someone-else")
    report = Recovery(store, publisher, queued_timeout_s=60, lock=lock, clock=clock).sweep()
    assert report.published == 2
    assert fake.get("t:recover:lock") is None  # released after the sweep


def test_the_scan_lock_is_released_only_by_its_holder(fake: fakeredis.FakeRedis) -> None:
    lock = ScanLock(fake, "k", ttl_ms=10_000)
    assert lock.acquire("a")
    assert not lock.acquire("b")
    assert not lock.release("b")
    assert fake.get("k") == b"a"
    assert lock.release("a")
    assert lock.acquire("b")


def test_the_loop_sweeps_at_boot_then_on_its_interval_and_stops_on_drain() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    sweeps: list[float] = []

    class Counting(Recovery):
        def sweep(self):  # type: ignore[no-untyped-def]
            sweeps.append(time.monotonic())
            return super().sweep()

    drain = DrainToken()
    loop = RecoveryLoop(
        lambda: Counting(store, ListPublisher(), queued_timeout_s=60, clock=clock),
        interval_s=0.05,
        drain=drain,
    )
    loop.start()
    time.sleep(0.3)
    drain.request(StopReason.SHUTDOWN)
    loop.join(2)
    n = len(sweeps)
    assert n >= 3
    time.sleep(0.12)
    assert len(sweeps) == n


def test_a_failing_sweep_does_not_kill_the_loop() -> None:
    calls: list[int] = []

    def factory() -> Recovery:
        calls.append(1)
        raise ConnectionError("redis down")

    drain = DrainToken()
    loop = RecoveryLoop(factory, interval_s=0.02, drain=drain)
    loop.start()
    time.sleep(0.2)
    drain.request(StopReason.SHUTDOWN)
    loop.join(2)
    assert len(calls) >= 3


# -- queued runs: backoff and backlog ---------------------------------------------------------


def queued_runs(store: MemoryStore | RedisStore, n: int, clock: Clock) -> list[str]:
    """Registered runs whose message went out (or was meant to) but nobody claimed."""
    ids = [f"q{i:03d}" for i in range(n)]
    for run_id in ids:
        store.register(RunRequest(agent="demo.counter"), run_id=run_id, queue="q", now=clock())
    return ids


def test_queued_runs_are_not_republished_while_their_queue_has_a_backlog() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    queued_runs(store, 5, clock)
    publisher = ListPublisher(depth=40)
    recovery = Recovery(store, publisher, queued_timeout_s=60, clock=clock)
    clock.t += 60
    report = recovery.sweep()
    assert (report.deferred, report.requeued, report.published) == (5, 0, 0)
    assert publisher.depth_asked == ["q"]  # one LLEN per queue per sweep, not per run
    assert report.as_dict()["deferred"] == 5
    publisher.depth = 0  # the backlog drained, and still nobody claimed them: lost
    clock.t += 120  # their next check (backoff: 2 x 60 s after the first)
    assert recovery.sweep().published == 5


def test_a_long_backlog_costs_each_run_a_few_duplicates_not_one_per_timeout() -> None:
    """20 timeouts of overload, a sweep every half timeout: the old rule re-published every
    run 20 times; backoff alone does it 4 times, and the backlog rule twice."""
    for depth, expected in ((50, 2), (0, 4)):
        clock = Clock()
        store = MemoryStore(clock=clock)
        ids = queued_runs(store, 3, clock)
        publisher = ListPublisher(depth=depth)
        recovery = Recovery(store, publisher, queued_timeout_s=60, clock=clock)
        for _ in range(40):
            clock.t += 30
            recovery.sweep()
        assert sorted(publisher.run_ids) == sorted(ids * expected), depth


def test_an_unreadable_queue_depth_counts_as_no_backlog(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    queued_runs(store, 2, clock)
    clock.t += 60
    publisher = ListPublisher(depth=None)
    report = Recovery(store, publisher, queued_timeout_s=60, clock=clock).sweep()
    assert report.published == 2 and publisher.depth_asked == ["q"]
    assert "cannot read the depth of queue 'q'" in caplog.text


def test_one_sweep_goes_through_every_batch() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    interrupted_runs(store, 250, clock)
    publisher = ListPublisher()
    report = Recovery(store, publisher, queued_timeout_s=60, batch=100, clock=clock).sweep()
    assert (report.scanned, report.published) == (250, 250)
    assert [len(b) for b in publisher.batches] == [100, 100, 50]


def test_a_sweep_recovers_runs_an_older_version_left_unindexed(fake: fakeredis.FakeRedis) -> None:
    clock = Clock()
    store = RedisStore(fake, key_prefix="t")
    ids = interrupted_runs(store, 3, clock)
    fake.delete(store.keys.due, store.keys.waiting)  # the older version had no such index
    publisher = ListPublisher()
    report = Recovery(store, publisher, queued_timeout_s=60, clock=clock).sweep()
    assert (report.reindexed, report.published) == (3, 3)
    assert sorted(publisher.run_ids) == ids


@pytest.mark.redis
def test_a_message_still_in_its_queue_is_not_duplicated_but_a_lost_one_is_replaced(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    store = RedisStore(redis_client, key_prefix="bl")
    publisher = BatchPublisher(redis_client)
    request = RunRequest(agent="demo.counter")
    store.register(request, run_id="r1", queue="bl-q", now=clock())
    publisher.publish("r1", request.to_json(), queue="bl-q")  # what Client.enqueue does
    recovery = Recovery(store, publisher, queued_timeout_s=60, clock=clock)
    clock.t += 60  # the workers are saturated: r1 is still waiting in the queue
    report = recovery.sweep()
    assert (report.deferred, report.published) == (1, 0)
    assert redis_client.llen("bl-q") == 1
    redis_client.rpop("bl-q")  # a worker took it, and died before claiming: lost
    clock.t += 120
    assert recovery.sweep().published == 1
    assert redis_client.llen("bl-q") == 1
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.QUEUED
