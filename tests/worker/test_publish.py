"""The batch publisher writes what Celery writes, one round trip per batch."""

from __future__ import annotations

import base64
import json
from typing import Any

import fakeredis
import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Queue
from redis.connection import AbstractConnection

from executus_worker.broker_publish import CeleryPublisher
from executus_worker.core.models import RunRequest
from executus_worker.publish import TASK_RUN, BatchPublisher, RunMessage, build_envelope
from executus_worker.settings import Settings


def decode(raw: bytes) -> tuple[dict[str, Any], list[Any]]:
    envelope = json.loads(raw)
    body = json.loads(base64.b64decode(envelope["body"]))
    return envelope, body


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write of LPUSHes to a Redis connection, as the bytes sent: one per round trip (a
    pipeline's or a packed batch's commands go out in one write; connection setup is left out)."""
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def send_packed_command(self: AbstractConnection, command: Any, *a: Any, **kw: Any) -> Any:
        data = b"".join(command) if isinstance(command, list) else bytes(command)
        if b"\r\nLPUSH\r\n" in data:
            sent.append(data)
        return original(self, command, *a, **kw)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_packed_command)
    return sent


def messages(n: int, queue: str = "executus") -> list[RunMessage]:
    return [
        RunMessage(f"r{i}", RunRequest(run_id=f"r{i}", agent="demo.counter").to_json(), queue)
        for i in range(n)
    ]


def test_the_envelope_carries_run_id_and_request_only() -> None:
    envelope, body = decode(build_envelope(TASK_RUN, ["r1", '{"agent":"a"}'], queue="q").encode())
    assert body[0] == ["r1", '{"agent":"a"}']
    assert body[1] == {}
    assert envelope["headers"]["task"] == TASK_RUN
    assert envelope["headers"]["argsrepr"] == "['r1']"  # never the request in logs
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "q"}
    assert envelope["content-type"] == "application/json"


def test_each_batch_is_one_round_trip_and_order_is_kept(wire: list[bytes]) -> None:
    client = fakeredis.FakeRedis()
    publisher = BatchPublisher(client, batch_size=1000)
    assert publisher.publish_many(messages(2500)) == 2500
    assert len(wire) == 3
    first = client.rpop("executus")
    assert first is not None
    assert decode(first)[1][0][0] == "r0"  # kombu pops from the right: first in, first out


def test_messages_go_to_their_own_queues_under_the_global_prefix_where_depth_is_read() -> None:
    client = fakeredis.FakeRedis()
    publisher = BatchPublisher(client, global_keyprefix="pfx:")
    publisher.publish_many(messages(2, "a") + messages(3, "b"))
    assert (client.llen("pfx:a"), client.llen("pfx:b")) == (2, 3)
    assert (publisher.queue_depth("a"), publisher.queue_depth("b")) == (2, 3)
    assert publisher.queue_depth("nothing-here") == 0


def test_the_client_publisher_connects_only_when_it_publishes() -> None:
    publisher = CeleryPublisher(Settings(redis_url="redis://127.0.0.1:1/0"))
    publisher.close()  # never connected: nothing to do, no error


@pytest.mark.redis
def test_the_envelope_matches_what_celery_send_task_writes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete("cmp")
    app = Celery("cmp", broker=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"])
    app.send_task(TASK_RUN, args=["r1", "{}"], queue="cmp", ignore_result=True)
    theirs = json.loads(client.rpop("cmp") or b"")
    ours = json.loads(build_envelope(TASK_RUN, ["r1", "{}"], queue="cmp"))
    assert set(ours) == set(theirs)
    assert set(ours["headers"]) == set(theirs["headers"])
    assert set(ours["properties"]) - {"reply_to"} <= set(theirs["properties"])
    assert base64.b64decode(ours["body"]) and json.loads(
        base64.b64decode(ours["body"])
    ) == json.loads(base64.b64decode(theirs["body"]))
    app.close()


@pytest.mark.redis
def test_kombu_consumes_a_batch_published_message(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete("kq")
    BatchPublisher(client).publish_many(messages(1, "kq"))
    received: list[tuple[Any, dict[str, Any]]] = []
    with Connection(redis_url) as conn:

        def on_message(message: Any) -> None:
            received.append((message.decode(), dict(message.headers)))
            message.ack()

        with Consumer(conn, [Queue("kq")], on_message=on_message, accept=["json"]):
            conn.drain_events(timeout=5)
    ((body, headers),) = received
    assert body[0][0] == "r0" and headers["task"] == TASK_RUN


def test_big_batches_are_split_into_bounded_pushes_in_one_round_trip(
    monkeypatch: pytest.MonkeyPatch, wire: list[bytes]
) -> None:
    client = fakeredis.FakeRedis()
    monkeypatch.setattr("executus_worker.publish.MAX_PUSH_BYTES", 5_000)
    big = [RunMessage(f"r{i}", json.dumps({"agent": "a", "x": "y" * 1500}), "q") for i in range(10)]
    assert BatchPublisher(client).publish_many(big) == 10
    assert len(wire) == 1
    pushes = wire[0].count(b"$5\r\nLPUSH\r\n")
    assert 5 <= pushes <= 10  # ~3 KB envelopes, at most 5,000 bytes per LPUSH
    order = [decode(client.rpop("q"))[1][0][0] for _ in range(10)]  # type: ignore[arg-type]
    assert order == [f"r{i}" for i in range(10)]


def test_every_message_of_a_run_has_the_run_id_as_its_task_id() -> None:
    """Celery's tools then name runs by id (revoke, AsyncResult), across recoveries."""
    client = fakeredis.FakeRedis()
    publisher = BatchPublisher(client)
    publisher.publish_many(messages(2))
    publisher.publish_many(messages(1))  # a recovery re-publishing r0
    envelopes = [json.loads(raw) for raw in client.lrange("executus", 0, -1)]
    ids = sorted(e["headers"]["id"] for e in envelopes)
    assert ids == ["r0", "r0", "r1"]
    assert all(e["properties"]["correlation_id"] == e["headers"]["id"] for e in envelopes)
    # kombu keys unacked messages by delivery tag: two messages of one run must not share one.
    assert len({e["properties"]["delivery_tag"] for e in envelopes}) == 3
    assert all(e["headers"]["ignore_result"] is True for e in envelopes)


def test_with_a_result_backend_messages_ask_for_their_result_to_be_stored() -> None:
    client = fakeredis.FakeRedis()
    BatchPublisher(client, ignore_result=False).publish_many(messages(1))
    assert json.loads(client.lpop("executus"))["headers"]["ignore_result"] is False
