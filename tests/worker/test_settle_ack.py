"""The ack side of settling: a settled message's ack skips its round trip, nothing else does."""

from __future__ import annotations

import os
from typing import Any

import pytest

from executus_worker.checkpoint.settle import Settle
from executus_worker.core.stop import StopToken
from executus_worker.settings import Settings
from executus_worker.worker import transport
from executus_worker.worker.runtime import Runtime
from executus_worker.worker.transport import SettledTags, SettlingQoS, server_address


class _NoBroker:
    """A channel whose broker must not be touched."""

    def conn_or_acquire(self, client: Any = None) -> Any:
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
