"""The ack side of settling: a settled message's ack skips its round trip, nothing else does."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis
from kombu import Connection

from executus_worker.checkpoint.settle import Settle
from executus_worker.core.stop import StopToken
from executus_worker.publish import TASK_RUN, build_envelope
from executus_worker.settings import Settings
from executus_worker.worker import transport
from executus_worker.worker.runtime import Runtime
from executus_worker.worker.transport import (
    SettledTags,
    SettlingQoS,
    Transport,
    server_address,
)


class _NoBroker:
    """A channel whose broker must not be touched."""

    def conn_or_acquire(self, client: Any = None) -> Any:
        raise AssertionError("the ack went to the broker")

    @property
    def pool(self) -> Any:  # what the packed ack writes through
        raise AssertionError("the ack went to the broker")

    do_restore = False  # nothing to restore when the test's QoS is collected
    unacked_key = "unacked"
    unacked_index_key = "unacked_index"


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> SettledTags:
    tags = SettledTags()
    tags.consuming()
    monkeypatch.setattr(transport, "SETTLED", tags)
    return tags


def test_a_settled_message_is_acked_in_memory_only(settled: SettledTags) -> None:
    qos = SettlingQoS(_NoBroker())
    qos._delivered["tag-1"] = object()
    settled.add("tag-1")
    qos.ack("tag-1")
    assert "tag-1" in qos._dirty  # kombu's bookkeeping saw the ack
    assert not settled.take("tag-1")  # and the tag is forgotten


def test_any_other_ack_goes_to_the_broker(settled: SettledTags) -> None:
    qos = SettlingQoS(_NoBroker())
    settled.add("tag-1")
    with pytest.raises(AssertionError, match="went to the broker"):
        qos.ack("tag-2")
    assert settled.take("tag-1")


def test_a_reject_forgets_the_tag_and_is_kombus(settled: SettledTags) -> None:
    qos = SettlingQoS(_NoBroker())
    settled.add("tag-1")
    with pytest.raises(AssertionError, match="went to the broker"):
        qos.reject("tag-1", requeue=False)
    assert not settled.take("tag-1")


def test_only_a_consuming_process_settles() -> None:
    tags = SettledTags()
    assert not tags.here()
    tags.consuming()
    assert tags.here()
    tags._consumer_pid = os.getpid() + 1  # what a prefork child inherits from its parent
    assert not tags.here()


def test_the_registry_is_bounded() -> None:
    tags = SettledTags()
    tags.MAX_TAGS = 2
    for tag in ("a", "b", "c"):
        tags.add(tag)
    assert [tags.take(t) for t in ("a", "b", "c")] == [True, True, False]


def _runtime() -> Runtime:
    return Runtime(Settings(redis_url="redis://127.0.0.1:6399/3"), drain=StopToken())


def test_the_runtime_settles_only_on_its_own_redis(settled: SettledTags) -> None:
    runtime = _runtime()
    address = server_address(runtime.client().connection_pool)  # type: ignore[union-attr]
    assert address == ["127.0.0.1", 6399, 3, None]
    settle = runtime.settle_for(["t1", "ui", "uh", *address])
    assert isinstance(settle, Settle) and (settle.tag, settle.index_key) == ("t1", "ui")
    settle.settled("t1")
    assert settled.take("t1")
    for other in (["127.0.0.1", 6399, 4, None], ["10.0.0.1", 6399, 3, None], None):
        assert runtime.settle_for(["t1", "ui", "uh", *(other or [])]) is None
    for malformed in (None, "t1", ["t1", 1, "uh", *address], [*address]):
        assert runtime.settle_for(malformed) is None


def test_the_runtime_does_not_settle_outside_the_consuming_process(settled: SettledTags) -> None:
    runtime = _runtime()
    address = server_address(runtime.client().connection_pool)  # type: ignore[union-attr]
    settled._consumer_pid = os.getpid() + 1
    assert runtime.settle_for(["t1", "ui", "uh", *(address or [])]) is None


@pytest.mark.redis
@pytest.mark.parametrize("prefix", ["", "pfx:"], ids=["packed", "kombu-prefixed"])
def test_the_unacked_record_and_the_ack_are_kombus_own_writes(
    redis_url: str, settled: SettledTags, prefix: str
) -> None:
    """The record and the ack, packed by hand, write and remove exactly what kombu's pipelines
    do; under kombu's global_keyprefix kombu's own methods run (its client prefixes keys)."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    options = {"global_keyprefix": prefix} if prefix else {}
    connection = Connection(redis_url, transport=Transport, transport_options=options)
    channel = connection.channel()
    try:
        raw = json.loads(build_envelope(TASK_RUN, ["run-1", "{}"], queue="q"))
        raw["properties"]["delivery_info"] = {"exchange": "ex", "routing_key": "rk"}
        message = channel.message_to_python(raw)
        tag = message.delivery_tag
        channel.qos.append(message, tag)
        stored = client.hget(f"{prefix}unacked", tag)
        assert stored is not None
        assert json.loads(stored) == [raw, "ex", "rk"]  # what kombu restores from
        assert client.zscore(f"{prefix}unacked_index", tag) is not None
        assert tag in channel.qos._delivered
        channel.qos.ack(tag)
        assert not client.hexists(f"{prefix}unacked", tag)
        assert client.zscore(f"{prefix}unacked_index", tag) is None
        assert tag in channel.qos._dirty  # kombu's bookkeeping saw the ack
    finally:
        channel.close()
        connection.release()
        client.close()
