"""A run's ending settles its broker message in the same write (checkpoint/settle.py)."""

from __future__ import annotations

import pytest
import redis

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.settle import Settle, current, settling
from executus_worker.checkpoint.store import Fence, RunStore
from executus_worker.core.models import RunStatus
from executus_worker.core.stop import OwnershipLost

from .conformance import NOW, msgs, request

INDEX, HASH = "test-settle:unacked_index", "test-settle:unacked"


def _claimed(store: RunStore, run_id: str) -> Fence:
    store.register(request(), run_id=run_id, queue="executus", now=NOW)
    fence = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=NOW).fence
    assert fence is not None
    return fence


def _finish(store: RunStore, run_id: str, fence: Fence, settle: Settle | None) -> None:
    store.finish(
        run_id, fence=fence, status=RunStatus.COMPLETED, output="done", error=None,
        base_len=0, new_messages=msgs(1), now=NOW, result_ttl_s=60, settle=settle,
    )  # fmt: skip


def _unacked(client: redis.Redis, tag: str) -> None:
    client.zadd(INDEX, {tag: NOW})
    client.hset(HASH, tag, '["message", "", "executus"]')


@pytest.fixture
def broker(redis_client: redis.Redis) -> redis.Redis:
    redis_client.delete(INDEX, HASH)
    return redis_client


@pytest.mark.redis
def test_finish_removes_the_unacked_entry_and_says_so(broker: redis.Redis) -> None:
    store = RedisStore(broker, key_prefix="test-settle")
    fence = _claimed(store, "s1")
    _unacked(broker, "tag-1")
    _unacked(broker, "tag-other")
    told: list[str] = []
    _finish(store, "s1", fence, Settle("tag-1", INDEX, HASH, settled=told.append))
    assert told == ["tag-1"]
    assert broker.hkeys(HASH) == [b"tag-other"]  # only this attempt's message
    assert broker.zrange(INDEX, 0, -1) == [b"tag-other"]
    assert store.get("s1").status is RunStatus.COMPLETED  # type: ignore[union-attr]


@pytest.mark.redis
def test_a_fenced_finish_settles_nothing(broker: redis.Redis) -> None:
    store = RedisStore(broker, key_prefix="test-settle")
    fence = _claimed(store, "s2")
    _unacked(broker, "tag-2")
    told: list[str] = []
    stale = Fence("0" * 16, fence.epoch)  # another claim's token
    with pytest.raises(OwnershipLost):
        _finish(store, "s2", stale, Settle("tag-2", INDEX, HASH, settled=told.append))
    assert told == []
    assert broker.hkeys(HASH) == [b"tag-2"]  # kombu acks or restores it as before
    assert broker.zrange(INDEX, 0, -1) == [b"tag-2"]


def test_a_store_without_a_broker_never_claims_to_have_settled() -> None:
    store = MemoryStore()
    fence = _claimed(store, "s3")
    told: list[str] = []
    _finish(store, "s3", fence, Settle("tag-3", INDEX, HASH, settled=told.append))
    assert told == []


def test_the_settle_is_scoped_to_its_block() -> None:
    settle = Settle("t", INDEX, HASH, settled=lambda tag: None)
    assert current() is None
    with settling(settle):
        assert current() is settle
        with settling(None):
            assert current() is None
        assert current() is settle
    assert current() is None
