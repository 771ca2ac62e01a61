"""The hardened kombu transport in-process, against a Redis that goes away underneath it.

Celery's consumer, on a broken connection, closes the kombu Connection: the transport's
``client`` is set to None before (some of) the channels are closed, and runs still in flight
ack their messages on the old channel later. Stock kombu 5.7 raises AttributeError on both
paths (the worker dies); these pin down that ours restores and acks instead.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.message import Message

from executus_worker.worker.transport import Transport

from .redis_server import RedisServer

pytestmark = pytest.mark.faults

QUEUE = "tq"


@pytest.fixture
def delivered(fault_redis: RedisServer) -> Iterator[tuple[Connection, Message]]:
    """A connection through our transport holding one delivered, unacked message."""
    conn = Connection(fault_redis.url, transport=Transport)
    queue = Queue(QUEUE, Exchange(QUEUE, "direct"), routing_key=QUEUE)
    conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key=QUEUE, declare=[queue])
    got: list[Message] = []
    with conn.Consumer(queue, callbacks=[lambda body, message: got.append(message)]):
        conn.drain_events(timeout=5)
    assert len(got) == 1
    with fault_redis.client() as client:
        assert client.hlen("unacked") == 1 and client.llen(QUEUE) == 0
    yield conn, got[0]
    conn.release()


def _state(server: RedisServer) -> tuple[int, int]:
    with server.client() as client:
        return client.hlen("unacked"), client.llen(QUEUE)


def test_a_channel_closed_after_the_transport_let_go_restores_its_unacked_message(
    fault_redis: RedisServer, delivered: tuple[Connection, Message]
) -> None:
    conn, message = delivered
    conn.transport.client = None  # kombu's Connection._do_close_transport, as Celery runs it
    message.channel.close()
    assert _state(fault_redis) == (0, 1)  # back on its queue, redelivered after reconnect
    with fault_redis.client() as client:
        restored = json.loads(client.lindex(QUEUE, 0))
    assert restored["properties"]["delivery_info"]["redelivered"] is True


def test_a_run_that_outlived_a_redis_restart_acks_on_its_old_channel(
    fault_redis: RedisServer, delivered: tuple[Connection, Message]
) -> None:
    conn, message = delivered
    fault_redis.kill()
    conn.transport.client = None
    with pytest.raises(redis.ConnectionError):
        message.channel.close()  # restoring needs Redis: a connection error, never fatal
    fault_redis.start()
    assert _state(fault_redis) == (1, 0)  # the crash kept the unacked entry (AOF)
    message.ack()
    assert _state(fault_redis) == (0, 0)  # no late duplicate after the visibility timeout


def _hand_built(**properties: object) -> str:
    """A message as another service might LPUSH it: no delivery_info unless given."""
    body = json.dumps([["run-1", "{}"], {}, {}])
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": "executus.run", "id": "hand-1"},
            "properties": {"delivery_tag": "tag-1", **properties},
        }
    )


def _consume_one(conn: Connection) -> list[Message]:
    got: list[Message] = []
    queue = Queue(QUEUE, Exchange(QUEUE, "direct"), routing_key=QUEUE)
    consumer = conn.Consumer(queue, callbacks=[lambda body, message: got.append(message)])
    with consumer, contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=2)
    return got


@pytest.mark.parametrize(
    "properties",
    [{}, {"delivery_info": {}}, {"delivery_info": {"exchange": None, "routing_key": ""}}],
    ids=["no-delivery-info", "empty-delivery-info", "null-fields"],
)
def test_a_hand_built_message_without_delivery_info_is_delivered_and_restorable(
    fault_redis: RedisServer, properties: dict[str, object]
) -> None:
    with fault_redis.client() as client:
        client.lpush(QUEUE, _hand_built(**properties))
    conn = Connection(fault_redis.url, transport=Transport)
    try:
        [message] = _consume_one(conn)
        assert message.delivery_info["routing_key"] == QUEUE
        assert json.loads(message.body)[0] == ["run-1", "{}"]
        # Recorded as unacked with a route back to its queue, so a worker crash restores it.
        message.channel.close()
        assert _state(fault_redis) == (0, 1)
    finally:
        conn.release()


def test_a_message_kombu_cannot_take_is_dropped_with_a_log_line_not_a_connection_loss(
    fault_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "user-secret-" + "x" * 200
    with fault_redis.client() as client:
        # An unknown body encoding: kombu fails while building the message.
        client.lpush(QUEUE, _hand_built(body_encoding="rot13", note=secret))
        client.lpush(QUEUE, _hand_built())
    conn = Connection(fault_redis.url, transport=Transport)
    try:
        got = _consume_one(conn) + _consume_one(conn)
    finally:
        conn.release()
    assert len(got) == 1  # the good one behind it is delivered
    assert f"dropped a message on queue {QUEUE} that could not be delivered" in caplog.text
    assert "hand-1" in caplog.text and secret not in caplog.text
