"""Run state on a real three-master Redis Cluster: every operation of every Redis-backed part
(store, events, spend, progress, agent directory, schedules, scan lock, layout check, `check`)
runs against it, so a command that crosses slots fails here (redis-py refuses one before
sending, the server answers CROSSSLOT). The store's own contract runs on the cluster too
(``backend`` in conftest.py)."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from executus_worker.checkpoint import resp
from executus_worker.checkpoint.events import RedisEventLog
from executus_worker.checkpoint.keys import DEFAULT_CLUSTER_SHARDS, KeySchema
from executus_worker.checkpoint.layout import check_layout
from executus_worker.checkpoint.redis_index import count_active
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.spend import RedisSpendLedger
from executus_worker.checkpoint.store import ClaimStatus, RenewStatus
from executus_worker.cli.check.command import run_checks
from executus_worker.client import Client
from executus_worker.client.progress import read_progress
from executus_worker.core.models import Checkpoint, Message, RunRequest, RunStatus
from executus_worker.core.ports import AuditEvent, Usage
from executus_worker.embedded_cluster import LocalCluster
from executus_worker.errors import ConfigError
from executus_worker.fleet.directory import AgentDirectory, WorkerAd
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.store import ScheduleStore
from executus_worker.settings import Settings
from executus_worker.worker.recovery import ScanLock

pytestmark = pytest.mark.redis

NOW = 1_000.0
RUNS = [f"run-{i}" for i in range(90)]  # enough to land in every partition of every master


def _request() -> RunRequest:
    return RunRequest(agent="demo.counter", input={"steps": 3})


def _store(client: RedisCluster) -> RedisStore:
    return RedisStore(client, key_prefix="cl")


def test_every_partition_is_one_slot_and_the_partitions_share_the_masters_evenly(
    cluster_client: RedisCluster,
) -> None:
    keys = _store(cluster_client).keys
    assert keys.shards == DEFAULT_CLUSTER_SHARDS
    masters: Counter[str] = Counter()
    for run_id in RUNS:
        run = keys.run(run_id)
        slots = {cluster_client.keyslot(k) for k in (*run.all(), keys.events(run_id))}
        slots.add(cluster_client.keyslot(keys.spend(run_id)))
        slots.add(cluster_client.keyslot(keys.partition(run_id).audit))
        assert len(slots) == 1, run
    for part in keys.partitions():
        node = cluster_client.get_node_from_key(part.active)
        masters[node.name] += 1
    # redis-cli --cluster create gives each master a third of the slots; the partition tags
    # are chosen so 64 partitions split 21/21/22.
    assert sorted(masters.values()) == [21, 21, 22]


def test_the_run_lifecycle_on_runs_spread_over_every_master(cluster_client: RedisCluster) -> None:
    store = _store(cluster_client)
    fences = {}
    for run_id in RUNS:
        store.register(_request(), run_id=run_id, queue="q", now=NOW)
        claim = store.claim(run_id, owner="w1", lease_ttl_s=30, max_attempts=3, now=NOW)
        assert claim.status is ClaimStatus.CLAIMED and claim.fence is not None
        fences[run_id] = claim.fence
    # One pipelined renewal for runs on all masters: per-run scripts plus a ZADD per partition.
    statuses = store.renew_many(list(fences.items()), lease_ttl_s=30, now=NOW + 5)
    assert statuses == [RenewStatus.OK] * len(RUNS)
    leases, cursor, pages = [], 0, 0
    while True:
        page, cursor = store.running_leases(cursor=cursor, batch=25)
        leases += page
        pages += 1
        if cursor == 0:
            break
    assert sorted(lease.run_id for lease in leases) == sorted(RUNS)
    assert pages == 4  # pages are filled across partitions
    for i, run_id in enumerate(RUNS):
        fence = fences[run_id]
        ack = store.save_checkpoint(
            run_id,
            fence=fence,
            base_len=0,
            new_messages=[Message(role="assistant", content="step 1")],
            checkpoint=_checkpoint(run_id),
            now=NOW + 6,
        )
        assert ack.stored == 1
        assert store.load_checkpoint(run_id) is not None
        if i % 3 == 0:
            store.interrupt(run_id, fence=fence, now=NOW + 7)
        elif i % 3 == 1:
            store.finish(
                run_id, fence=fence, status=RunStatus.COMPLETED, output="done", error=None,
                base_len=1, new_messages=[], now=NOW + 7, result_ttl_s=60,
            )  # fmt: skip
        else:
            assert store.release_lease(run_id, fence_token=fence.token)
    assert count_active(cluster_client, store.keys) == 60
    assert [m.content for m in store.transcript(RUNS[1])] == ["step 1"]
    listed = store.list_runs(limit=500)
    assert sorted(r.run_id for r in listed) == sorted(RUNS)
    completed = store.list_runs(status=RunStatus.COMPLETED, limit=7)
    assert len(completed) == 7 and all(r.status is RunStatus.COMPLETED for r in completed)
    # The sweep reads every partition and requeues through every master.
    requeued: list[str] = []
    while True:
        batch = store.sweep(now=NOW + 100, queued_timeout_s=600, batch=16)
        requeued += [r.run_id for r in batch.requeued]
        assert not batch.errors
        if not batch.more:
            break
    assert sorted(requeued) == sorted(r for i, r in enumerate(RUNS) if i % 3 != 1)
    assert store.sweep(now=NOW + 100, queued_timeout_s=600).scanned == 0
    audit = store.audit_index(now=NOW + 100, limit=500)
    assert audit.checked == 60 and audit.added == 0
    cancelled = store.request_cancel(RUNS[0], now=NOW + 101)
    assert cancelled.status is RunStatus.CANCELLED


def test_a_requeue_sent_to_a_master_that_no_longer_serves_the_slot_follows_the_redirect(
    cluster_client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot migrated since the client's slot map was read: the hand-packed call gets MOVED
    and goes again through the cluster client, which follows it."""
    store = _store(cluster_client)
    for run_id in RUNS[:30]:
        store.register(_request(), run_id=run_id, queue="q", now=NOW)
        fence = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=3, now=NOW).fence
        assert fence is not None
        store.interrupt(run_id, fence=fence, now=NOW)
    masters = cluster_client.get_primaries()
    right = cluster_client.get_redis_connection

    def stale(node: ClusterNode) -> redis.Redis:
        # What a stale slot map does: the packed calls go to another master than the slot's.
        return right(next(m for m in masters if m.name != node.name))

    monkeypatch.setattr(cluster_client, "get_redis_connection", stale)
    moved: list[object] = []
    send = resp.send_packed_many

    def spy(batches: list[tuple[redis.Redis, bytes, int]]) -> list[list[object]]:
        replies = send(batches)
        moved.extend(r for rs in replies for r in rs if isinstance(r, redis.exceptions.MovedError))
        return replies

    monkeypatch.setattr(resp, "send_packed_many", spy)
    batch = store.sweep(now=NOW + 1, queued_timeout_s=600, batch=1000)
    assert not batch.errors
    assert sorted(r.run_id for r in batch.requeued) == sorted(RUNS[:30])
    assert len(moved) == 30  # every packed call met MOVED, and went again


def _checkpoint(run_id: str) -> Checkpoint:
    return Checkpoint(
        run_id=run_id, iteration=1, messages=[Message(role="assistant", content="step 1")]
    )


def test_events_spend_and_progress(cluster_client: RedisCluster) -> None:
    store = _store(cluster_client)
    keys = store.keys
    for run_id in RUNS[:10]:
        store.register(_request(), run_id=run_id, queue="q", now=NOW)
    log = RedisEventLog(cluster_client, keys)
    log.append_many([AuditEvent(r, "started", NOW, {"n": i}) for i, r in enumerate(RUNS[:10])])
    assert [e.event for e in log.read(RUNS[3])] == ["started"]
    assert log.wait(RUNS[3], after="0", block_ms=10)[0].data == {"n": 3}
    ledger = RedisSpendLedger(cluster_client, keys)
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=0.5)
    run_totals, guild_totals = ledger.add(RUNS[0], "g1", "2026-12-01", usage)
    assert run_totals == (15, 0.5) and guild_totals == (15, 0.5)
    assert ledger.totals(RUNS[0], "g1", "2026-12-01")[1] == (15, 0.5)
    progress = read_progress(cluster_client, keys, RUNS[:10])
    assert [p.run_id for p in progress] == RUNS[:10]


def test_directory_schedules_and_scan_lock(cluster_client: RedisCluster) -> None:
    directory = AgentDirectory(cluster_client, key_prefix="cl", ttl_s=30)
    for n in range(3):
        directory.advertise(WorkerAd(f"w{n}@h", ("demo.counter",), ("q",), seen_at=time.time()))
    assert [ad.worker for ad in directory.read().workers] == ["w0@h", "w1@h", "w2@h"]

    schedules = ScheduleStore(cluster_client, key_prefix="cl")
    spec = JobSpec(name="nightly", cron="0 3 * * *", run=_request())
    assert schedules.add_job(spec)
    assert schedules.pause("nightly")
    assert schedules.compare_and_set("nightly", expect={"next_fire": ""}, values={"next_fire": "x"})
    assert schedules.states(["nightly"])["nightly"].next_fire == "x"
    assert schedules.keep_states(["nightly"]) == {"nightly"}
    assert schedules.expire_unkept_states() == (0, 0)
    assert schedules.remove_job("nightly")  # jobs + state + paused in one same-slot MULTI
    assert schedules.get_job("nightly") is None and schedules.paused() == set()

    lock = ScanLock(cluster_client, "cl:recover:lock")
    assert lock.acquire("t1") and not lock.acquire("t2")
    assert not lock.release("t2") and lock.release("t1")


def test_the_layout_is_recorded_once_and_a_mismatch_refused(cluster_client: RedisCluster) -> None:
    check_layout(cluster_client, KeySchema("lay", 64))
    check_layout(cluster_client, KeySchema("lay", 64))  # the same layout: fine
    assert cluster_client.get("lay:layout") == b"v1 shards=64"
    with pytest.raises(ConfigError, match="EXECUTUS_REDIS_SHARDS"):
        check_layout(cluster_client, KeySchema("lay", 16))
    # Runs in the unpartitioned layout (from before the layout key) are not hidden silently.
    cluster_client.zadd("old:runs:active", {"r1": NOW})
    with pytest.raises(ConfigError, match="EXECUTUS_REDIS_SHARDS=0"):
        check_layout(cluster_client, KeySchema("old", 64))


def test_a_cluster_store_refuses_the_unpartitioned_layout(cluster_client: RedisCluster) -> None:
    with pytest.raises(ValueError, match="shards"):
        RedisStore(cluster_client, shards=0)


def test_check_reports_the_cluster_and_its_layout(
    redis_cluster: LocalCluster, redis_url: str, cluster_client: RedisCluster
) -> None:
    settings = Settings(redis_url=redis_cluster.url, broker_url=redis_url, key_prefix="chk")
    findings = {f.check: f for f in run_checks(settings, environ={})}
    assert findings["redis"].level == "ok" and "Redis Cluster" in findings["redis"].detail
    assert findings["layout"].level == "ok"
    assert findings["runs"].level == "ok"
    cluster_client.set("chk:layout", "v1 shards=8")
    findings = {f.check: f for f in run_checks(settings, environ={})}
    assert (
        findings["layout"].level == "fail" and "EXECUTUS_REDIS_SHARDS" in findings["layout"].detail
    )


def test_cross_slot_commands_are_refused_so_the_tests_above_mean_something(
    cluster_client: RedisCluster,
) -> None:
    with pytest.raises(redis.RedisClusterException):
        cluster_client.evalsha("0" * 40, 2, "a", "b")


def test_a_client_compares_the_layout_but_never_records_one(
    redis_cluster: LocalCluster, redis_url: str, cluster_client: RedisCluster
) -> None:
    settings = Settings(redis_url=redis_cluster.url, broker_url=redis_url, key_prefix="cli")
    with Client(settings) as client:
        assert client.runs() == []
    assert cluster_client.get("cli:layout") is None
    cluster_client.set("cli:layout", "v1 shards=8")
    with Client(settings) as client, pytest.raises(ConfigError, match="EXECUTUS_REDIS_SHARDS"):
        client.runs()
