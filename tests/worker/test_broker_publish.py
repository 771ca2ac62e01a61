"""Publishing to RabbitMQ through kombu: what send_task would publish, confirmed, in batches."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Consumer, Message

from executus_worker.broker import run_queue
from executus_worker.broker_publish import CeleryPublisher, KombuPublisher
from executus_worker.publish import TASK_RUN, BatchPublisher, RunMessage
from executus_worker.settings import Settings


@pytest.fixture
def queue() -> str:
    return f"bp-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher(rabbitmq_url: str) -> Iterator[KombuPublisher]:
    with KombuPublisher(rabbitmq_url, batch_size=100) as pub:
        yield pub


def drain(url: str, queue: str, expected: int) -> list[Message]:
    got: list[Message] = []

    def keep(_body: object, message: Message) -> None:
        got.append(message)

    with Connection(url) as conn, Consumer(conn, [run_queue(queue)], callbacks=[keep], no_ack=True):
        while len(got) < expected:
            conn.drain_events(timeout=10)
    return got


def headers_of_send_task(url: str, queue: str) -> dict[str, Any]:
    app = Celery(set_as_current=False, broker=url)
    app.send_task(TASK_RUN, args=["r0", "{}"], queue=queue)
    (message,) = drain(url, queue, 1)
    app.close()
    return dict(message.headers)


def test_a_batch_arrives_confirmed_in_order_as_celery_would_publish_it(
    publisher: KombuPublisher, rabbitmq_url: str, queue: str
) -> None:
    messages = [RunMessage(f"r{i}", json.dumps({"i": i}), queue) for i in range(250)]
    assert publisher.publish_many(messages) == 250  # three batches, each confirmed
    assert publisher.queue_depth(queue) == 250
    got = drain(rabbitmq_url, queue, 250)
    assert [m.decode()[0] for m in got] == [[f"r{i}", json.dumps({"i": i})] for i in range(250)]
    first = got[0]
    assert first.content_type == "application/json"
    assert first.properties["delivery_mode"] == 2
    assert first.properties["correlation_id"] == first.headers["id"]
    assert first.headers["task"] == TASK_RUN
    assert first.headers["argsrepr"] == "['r0']"  # the run id only, never the request
    assert first.decode()[1:] == [{}, {"callbacks": None, "errbacks": None, "chain": None,
                                       "chord": None}]  # fmt: skip
    # The same header fields Celery's own send_task writes (task protocol 2).
    assert set(first.headers) == set(headers_of_send_task(rabbitmq_url, queue))


def test_a_refused_declaration_fails_the_publish_and_the_next_call_reconnects(
    rabbitmq_url: str, queue: str
) -> None:
    with KombuPublisher(rabbitmq_url) as classic:
        classic.publish("r1", "{}", queue=queue)
    # The queue exists as a classic queue: RabbitMQ refuses to redeclare it as a quorum queue.
    with KombuPublisher(rabbitmq_url, quorum=True) as quorum:
        with pytest.raises(Exception, match=r"PRECONDITION_FAILED|inequivalent"):
            quorum.publish("r2", "{}", queue=queue)
        quorum.publish("r3", "{}", queue=f"{queue}-quorum")  # a fresh connection
        assert quorum.queue_depth(f"{queue}-quorum") == 1


def test_the_client_publisher_picks_kombu_for_rabbitmq_and_lpush_for_redis(
    rabbitmq_url: str, queue: str
) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", broker_url=rabbitmq_url)
    with CeleryPublisher(settings) as pub:
        pub.publish("r1", "{}", queue=queue)
        assert isinstance(pub._batch(), KombuPublisher)
    with KombuPublisher(rabbitmq_url) as probe:
        assert probe.queue_depth(queue) == 1
    redis_pub = CeleryPublisher(Settings(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(redis_pub._batch(), BatchPublisher)  # built, never connected
    redis_pub.close()
