"""The recovery index on a real Redis: what a sweep costs, what renewals write, older data."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from executus_worker.checkpoint import codec
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRequest, RunStatus

from .conformance import NOW, request

pytestmark = pytest.mark.redis

T = 900.0


def _commands(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("config|resetstat", None)
    return calls


def test_a_sweep_with_nothing_due_runs_no_script_and_reads_no_record(
    redis_client: redis.Redis,
) -> None:
    store = RedisStore(redis_client, key_prefix="cost")
    big = RunRequest(agent="demo.counter", input={"blob": ["x" * 100] * 600})  # ~60 KB
    for i in range(50):
        store.register(big, run_id=f"live-{i}", queue="q", now=NOW)
        store.claim(f"live-{i}", owner="w", lease_ttl_s=60, max_attempts=5, now=NOW)
        store.register(big, run_id=f"queued-{i}", queue="q", now=NOW)
    redis_client.config_resetstat()
    batch = store.sweep(now=NOW + 30, queued_timeout_s=T)
    assert (batch.scanned, batch.requeued) == (0, [])
    assert _commands(redis_client) == {"zrangebyscore": 2}


def test_a_sweep_reads_the_request_only_of_the_runs_it_requeues(
    redis_client: redis.Redis,
) -> None:
    store = RedisStore(redis_client, key_prefix="cost")
    big = RunRequest(agent="demo.counter", input={"blob": ["x" * 100] * 600})  # ~60 KB
    for i in range(20):
        store.register(big, run_id=f"live-{i}", queue="q", now=NOW)
        store.claim(f"live-{i}", owner="w", lease_ttl_s=60, max_attempts=5, now=NOW)
    store.register(request(), run_id="lost", queue="q", now=NOW)
    fence = store.claim("lost", owner="w", lease_ttl_s=60, max_attempts=5, now=NOW).fence
    assert fence is not None
    store.interrupt("lost", fence=fence, now=NOW)
    before = int(redis_client.info("stats")["total_net_output_bytes"])
    # Every live lease is past its indexed deadline here, so each gets the per-run CAS.
    batch = store.sweep(now=NOW + 61, queued_timeout_s=T)
    sent = int(redis_client.info("stats")["total_net_output_bytes"]) - before
    assert [r.run_id for r in batch.requeued] == ["lost"] and batch.scanned == 21
    # 20 short 'skip' replies, one small request and the first INFO's own reply; reading the
    # live runs' requests would be 1.2 MB.
    assert sent < 8_000, sent


def test_renewals_push_the_due_deadline_forward_and_never_back(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client, key_prefix="ren")
    store.register(request(), run_id="r1", queue="q", now=NOW)
    fence = store.claim("r1", owner="w", lease_ttl_s=30, max_attempts=5, now=NOW).fence
    assert fence is not None
    assert redis_client.zscore(store.keys.due, "r1") == NOW + 30
    store.renew_many([("r1", fence)], lease_ttl_s=30, now=NOW + 10)
    assert redis_client.zscore(store.keys.due, "r1") == NOW + 40
    store.renew_many([("r1", fence)], lease_ttl_s=30, now=NOW + 5)  # a late, older renewal
    assert redis_client.zscore(store.keys.due, "r1") == NOW + 40
    store.interrupt("r1", fence=fence, now=NOW + 12)
    store.sweep(now=NOW + 12, queued_timeout_s=T)  # requeued: now in runs:waiting
    assert store.renew("r1", fence=fence, lease_ttl_s=30, now=NOW + 13) == "lost"
    assert redis_client.zscore(store.keys.due, "r1") is None  # not re-indexed by a renewal
    assert redis_client.zscore(store.keys.waiting, "r1") == NOW + 12


def test_runs_written_without_the_recovery_index_are_recovered(redis_client: redis.Redis) -> None:
    """Records as the previous version wrote them (indexed in runs:active only)."""
    store = RedisStore(redis_client, key_prefix="old")
    req = request()
    for i, status in enumerate(("interrupted", "queued", "running")):
        run_id = f"old-{status}"
        fields = codec.record_fields(req, run_id=run_id, queue="q", now=NOW + i)
        fields.update(status=status, epoch="1", attempts="1")
        redis_client.hset(store.keys.rec(run_id), mapping=fields)
        redis_client.zadd(store.keys.active, {run_id: NOW + i})
    assert store.sweep(now=NOW + 10, queued_timeout_s=T).scanned == 0
    audit = store.audit_index(now=NOW + 10, limit=2)
    assert (audit.checked, audit.added) == (3, 3)
    batch = store.sweep(now=NOW + 10, queued_timeout_s=T)
    assert {r.run_id: r.previous_status for r in batch.requeued} == {
        "old-interrupted": RunStatus.INTERRUPTED,
        "old-running": RunStatus.RUNNING,  # no lease key: its owner is gone
    }
    # The queued one keeps its timeout, counted from when it was enqueued.
    batch = store.sweep(now=NOW + 1 + T, queued_timeout_s=T)
    assert [r.run_id for r in batch.requeued] == ["old-queued"]
