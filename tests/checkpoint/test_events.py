"""Run event streams on a real Redis: bounded, expiring, readable in order."""

from __future__ import annotations

import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from executus_worker.checkpoint.events import RedisEventLog
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.core.ports import AuditEvent
from executus_worker.embedded import free_port
from executus_worker.errors import StoreError

pytestmark = pytest.mark.redis

KEYS = KeySchema("evt")


def unreachable() -> redis.Redis:
    # No retries: redis-py's default backoff would make every failed write take seconds.
    return redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))


def test_events_read_back_in_order_with_their_data(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, KEYS)
    log.append("r1", "claimed", {"owner": "host:1", "epoch": 1}, ts=10.5)
    log.append("r1", "step", {"iteration": 1, "input_tokens": 7})
    log.append("r2", "claimed", {"owner": "other"})
    events = log.read("r1")
    assert [(e.event, e.data) for e in events] == [
        ("claimed", {"owner": "host:1", "epoch": 1}),
        ("step", {"iteration": 1, "input_tokens": 7}),
    ]
    assert events[0].ts == 10.5 and events[0].run_id == "r1"
    assert [e.event for e in log.read("r1", after=events[0].id)] == ["step"]  # exclusive


def test_the_stream_is_bounded_and_expires(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, KEYS, maxlen=10, ttl_s=60)
    log.append_many([AuditEvent("r1", "step", float(i), {"i": i}) for i in range(500)])
    length = redis_client.xlen(KEYS.events("r1"))
    assert 10 <= length < 200  # MAXLEN ~ trims whole macro nodes: about maxlen, never 500
    assert 0 < redis_client.pttl(KEYS.events("r1")) <= 60_000
    newest = list(log.read_all("r1"))
    assert newest[-1].data == {"i": 499}  # the oldest are the ones trimmed


def test_read_all_pages_through_long_streams(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, KEYS, maxlen=5000)
    log.append_many([AuditEvent("r1", "step", 0.0, {"i": i}) for i in range(1200)])
    assert [e.data["i"] for e in log.read_all("r1")] == list(range(1200))


def test_wait_returns_new_events_or_nothing_after_the_block(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, KEYS)
    log.append("r1", "claimed", {})
    (first,) = log.read("r1")
    assert log.wait("r1", after=first.id, block_ms=50) == []
    timer = threading.Timer(0.1, lambda: log.append("r1", "step", {"iteration": 1}))
    timer.start()
    try:
        got = log.wait("r1", after=first.id, block_ms=5000)
    finally:
        timer.join()
    assert [e.event for e in got] == ["step"]


def test_a_hand_written_entry_is_shown_not_fatal(redis_client: redis.Redis) -> None:
    redis_client.xadd(KEYS.events("r1"), {"event": "odd", "data": "not json"})
    (event,) = RedisEventLog(redis_client, KEYS).read("r1")
    assert event.event == "odd" and "raw" in event.data


def test_a_sync_write_to_an_unreachable_redis_is_a_store_error() -> None:
    dead = unreachable()
    with pytest.raises(StoreError, match="writing 1 run events failed"):
        RedisEventLog(dead, KEYS).append("r1", "step", {})


def test_one_ttl_per_stream_set_after_its_events(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, KEYS, ttl_s=30)
    log.append_many([AuditEvent("r1", "a", 0.0, {}), AuditEvent("r2", "b", 0.0, {}),
                     AuditEvent("r1", "c", 0.0, {})])  # fmt: skip
    assert [e.event for e in log.read("r1")] == ["a", "c"]
    assert 0 < redis_client.pttl(KEYS.events("r1")) <= 30_000
    assert 0 < redis_client.pttl(KEYS.events("r2")) <= 30_000


def test_a_flushed_script_cache_is_reloaded(redis_client: redis.Redis) -> None:
    log = RedisEventLog(redis_client, KEYS)
    log.append("r1", "a", {})
    redis_client.script_flush()  # what a Redis restart does
    log.append_many([AuditEvent("r1", "b", 0.0, {}), AuditEvent("r2", "c", 0.0, {})])
    log.append("r1", "d", {})
    assert [e.event for e in log.read("r1")] == ["a", "b", "d"]
    assert [e.event for e in log.read("r2")] == ["c"]
