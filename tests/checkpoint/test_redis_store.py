"""RedisStore specifics the port cannot express: bytes on the wire, script reloads, clients."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence
from executus_worker.core.models import Checkpoint, Message, RunStatus
from executus_worker.embedded import free_port
from executus_worker.errors import StoreError

from .conformance import NOW, msgs, request

pytestmark = pytest.mark.redis


def _claimed(store: RedisStore, run_id: str = "r1") -> Fence:
    store.register(request(), run_id=run_id, queue="executus", now=NOW)
    fence = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=NOW).fence
    assert fence is not None
    return fence


def _save(store: RedisStore, epoch: Fence, base_len: int, new: list[Message]) -> None:
    store.save_checkpoint(
        "r1", fence=epoch, base_len=base_len, new_messages=new,
        checkpoint=Checkpoint(run_id="r1"), now=NOW,
    )  # fmt: skip


def _bytes_in(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("stats")
    return int(stats["total_net_input_bytes"])


def test_a_save_on_a_long_transcript_sends_only_the_new_message(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    epoch = _claimed(store)
    big = [Message(role="assistant", content="x" * 500) for _ in range(5_000)]
    _save(store, epoch, 0, big)
    before = _bytes_in(redis_client)
    _save(store, epoch, 5_000, [Message(role="assistant", content="y" * 500)])
    sent = _bytes_in(redis_client) - before
    # One ~520-byte message plus the meta and the EVALSHA framing; a rewrite would be ~2.6 MB.
    assert sent < 2_000, sent
    assert len(store.transcript("r1")) == 5_001


def test_scripts_are_reloaded_after_a_script_flush(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    epoch = _claimed(store)
    redis_client.script_flush()
    _save(store, epoch, 0, msgs(2))
    assert store.transcript("r1") == msgs(2)


def test_a_decoding_client_works_too(redis_url: str, redis_client: redis.Redis) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = RedisStore(client, key_prefix="dec")
        epoch = _claimed(store)
        _save(store, epoch, 0, msgs(3))
        loaded = store.load_checkpoint("r1")
        assert loaded is not None and loaded.messages == msgs(3)
        store.interrupt("r1", fence=epoch, now=NOW)
        assert [r.run_id for r in store.sweep(now=NOW + 1, queued_timeout_s=60).requeued] == ["r1"]
        assert store.list_runs(status=RunStatus.QUEUED)[0].run_id == "r1"
    finally:
        client.close()


def test_constructing_a_store_opens_no_connection() -> None:
    # No retries: redis-py's default backoff would spend seconds proving the port is closed.
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    store = RedisStore(client)  # must not touch the network
    with pytest.raises(StoreError, match="r1"):
        store.get("r1")
    with pytest.raises(StoreError):
        store.claim("r1", owner="w", lease_ttl_s=1, max_attempts=1, now=NOW)
    client.close()


def test_key_prefix_namespaces_every_key(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client, key_prefix="tenant-a")
    epoch = _claimed(store)
    _save(store, epoch, 0, msgs(1))
    keys = sorted(k.decode() for k in redis_client.scan_iter())
    assert keys == sorted(
        [
            "tenant-a:runs:active",
            "tenant-a:runs:due",
            "tenant-a:{run:r1}:rec",
            "tenant-a:{run:r1}:lease",
            "tenant-a:{run:r1}:ckpt",
            "tenant-a:{run:r1}:msgs",
        ]
    )
    assert KeySchema("tenant-a").run("r1").all()[:4] == [
        "tenant-a:{run:r1}:rec",
        "tenant-a:{run:r1}:lease",
        "tenant-a:{run:r1}:ckpt",
        "tenant-a:{run:r1}:msgs",
    ]


def test_lease_key_holds_the_claims_fence_with_a_ttl(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    fence = _claimed(store)
    lease = store.keys.lease("r1")
    assert redis_client.get(lease) == fence.token.encode()
    assert redis_client.hget(store.keys.rec("r1"), "fence") == fence.token.encode()
    assert 0 < int(redis_client.pttl(lease)) <= 30_000


def test_a_wrong_type_record_is_reported_by_the_sweep(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client)
    redis_client.set(store.keys.rec("weird"), "not a hash")
    redis_client.zadd(store.keys.active, {"weird": NOW})
    redis_client.zadd(store.keys.due, {"weird": NOW})
    batch = store.sweep(now=NOW, queued_timeout_s=1)
    assert batch.requeued == [] and batch.errors[0][0] == "weird"
    assert "holds a string" in batch.errors[0][1]
