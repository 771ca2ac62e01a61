"""Publish ``executus.run`` messages to the configured broker: ``CeleryPublisher`` picks the path.

Redis brokers keep the fast path (``publish.BatchPublisher``: pipelined LPUSHes of the exact
list items kombu's Redis transport reads). Any other broker (RabbitMQ) goes through kombu
(``KombuPublisher``).

KombuPublisher: real kombu publishes on one connection and one channel, batched: on RabbitMQ
(py-amqp) the channel is put in publisher-confirm mode once, a whole batch is written without
waiting, and then the broker's acks are awaited together -- one confirm round trip per batch
instead of one per message, and ``publish_many`` returns only once RabbitMQ has taken every
message (a nack or a lost connection raises, and the recovery sweep retries those runs later).

The message is what ``send_task`` would publish (task protocol 2, JSON): the headers come from
``publish.build_envelope``, so both paths share one definition of the wire format, and the
queue is declared exactly as the workers declare it (``broker.run_queue``; RabbitMQ refuses a
redeclaration with other arguments). Nothing connects at construction; the first publish does.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import redis
from kombu import Connection, Producer, Queue
from kombu.transport.base import StdChannel

from executus_worker.broker import run_queue
from executus_worker.errors import ExecutusError
from executus_worker.publish import (
    DEFAULT_BATCH_SIZE,
    TASK_RUN,
    BatchPublisher,
    RunMessage,
    batches,
    build_envelope,
)
from executus_worker.redis_connect import connect
from executus_worker.settings import Settings

# How long to wait for the broker's confirms of one batch before the batch counts as failed.
CONFIRM_TIMEOUT_S = 30.0
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class PublishNotConfirmed(ExecutusError):
    """The broker nacked a message of the batch, or did not confirm it in time."""


class KombuPublisher:
    """``publish``/``publish_many``/``queue_depth``/``close`` over a kombu connection."""

    def __init__(
        self,
        broker_url: str,
        *,
        quorum: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
        ignore_result: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._url = broker_url
        self._ignore_result = ignore_result  # False when workers store results (see publish.py)
        self._quorum = quorum
        self._batch_size = batch_size
        self._confirm_timeout_s = confirm_timeout_s
        self._origin = f"{os.getpid()}@{socket.gethostname()}"
        self._connection: Connection | None = None
        self._channel: StdChannel | None = None
        self._producer: Producer | None = None
        self._confirms: _Confirms | None = None
        self._declared: dict[str, Queue] = {}

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        self.publish_many([RunMessage(run_id, request_json, queue)])

    def publish_many(self, messages: Iterable[RunMessage]) -> int:
        """Publish every message, confirmed; returns how many. Raises on a broker error or a
        nack (the connection is dropped and rebuilt by the next call)."""
        try:
            return sum(self._flush(batch) for batch in batches(messages, self._batch_size))
        except BaseException:
            self.close()  # a channel in an unknown state is not reused
            raise

    def queue_depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (not those delivered and unacked)."""
        _producer, channel = self._open()
        # kombu-stubs type the reply as a str; py-amqp returns (name, ready, consumers).
        reply: Any = self._queue(queue).bind(channel).queue_declare(passive=True)
        return int(reply[1])

    def close(self) -> None:
        connection = self._connection
        self._connection = self._channel = self._producer = self._confirms = None
        self._declared.clear()
        if connection is not None:
            connection.release()

    def __enter__(self) -> KombuPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _open(self) -> tuple[Producer, StdChannel]:
        if self._producer is None or self._channel is None:
            connection = Connection(self._url)
            channel = connection.default_channel  # connects
            self._connection, self._channel = connection, channel
            self._producer = Producer(channel)
            self._confirms = _Confirms.select(channel)
        return self._producer, self._channel

    def _queue(self, name: str) -> Queue:
        declared = self._declared.get(name)
        if declared is None:
            declared = run_queue(name, quorum=self._quorum)
            declared.bind(self._open()[1]).declare()
            self._declared[name] = declared
        return declared

    def _flush(self, batch: list[RunMessage]) -> int:
        producer, _channel = self._open()
        for message in batch:
            queue = self._queue(message.queue)
            body, headers, correlation_id = self._message(message)
            producer.publish(
                body,
                exchange=queue.exchange,
                routing_key=message.queue,
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
                correlation_id=correlation_id,
                delivery_mode=2,  # persistent
                priority=0,
                retry=False,  # a failure fails the batch; the sweep retries its runs
            )
            if self._confirms is not None:
                self._confirms.sent += 1
        if self._confirms is not None:
            self._confirms.wait(self._confirm_timeout_s)
        return len(batch)

    def _message(self, message: RunMessage) -> tuple[bytes, dict[str, Any], str]:
        # build_envelope renders the full protocol-2 message Celery writes; the AMQP publish
        # carries its headers as message headers and the [args, kwargs, embed] body unencoded.
        args = [message.run_id, message.request_json]
        envelope = json.loads(
            build_envelope(
                TASK_RUN,
                args,
                queue=message.queue,
                task_id=message.run_id,  # every message of a run: see publish.py
                origin=self._origin,
                ignore_result=self._ignore_result,
            )
        )
        headers: dict[str, Any] = envelope["headers"]
        body = json.dumps([args, {}, _EMBED], separators=(",", ":")).encode()
        return body, headers, headers["id"]


class _Confirms:
    """Publisher confirms on a py-amqp channel: count what was sent, wait for the acks.

    RabbitMQ numbers the messages of a confirm-mode channel 1, 2, ... and acks them in
    order, possibly many at once (``multiple``); a nack means the broker lost that message.
    """

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self.sent = 0
        self._acked_through = 0  # every tag up to here is confirmed (acks with ``multiple``)
        self._acked_above: set[int] = set()  # single acks above that mark
        self._nacked = 0
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)

    @classmethod
    def select(cls, channel: Any) -> _Confirms | None:
        """Confirm mode if the transport has it (py-amqp); None for transports that publish
        synchronously anyway."""
        if not hasattr(channel, "confirm_select") or not hasattr(channel, "events"):
            return None
        channel.confirm_select()
        return cls(channel)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_through = max(self._acked_through, delivery_tag)
            self._acked_above = {t for t in self._acked_above if t > self._acked_through}
        elif delivery_tag > self._acked_through:
            self._acked_above.add(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked += 1

    @property
    def confirmed(self) -> int:
        return self._acked_through + len(self._acked_above)

    def wait(self, timeout_s: float) -> None:
        while self.confirmed < self.sent and not self._nacked:
            try:
                self._channel.connection.drain_events(timeout=timeout_s)
            except TimeoutError as exc:
                raise PublishNotConfirmed(
                    f"the broker confirmed {self.confirmed} of {self.sent} messages "
                    f"within {timeout_s:g}s"
                ) from exc
        if self._nacked:
            raise PublishNotConfirmed(f"the broker refused (nacked) {self._nacked} message(s)")


class CeleryPublisher:
    """The publisher the client uses: a lazy broker connection from ``Settings``.

    Redis brokers get the pipelined ``BatchPublisher``; RabbitMQ gets kombu publishes with
    publisher confirms (``kombu_publish.KombuPublisher``). Needs no Celery app and imports no
    task code, so a producer service stays light.
    """

    def __init__(self, settings: Settings, *, global_keyprefix: str = "") -> None:
        self._settings = settings
        self._keyprefix = global_keyprefix
        self._client: redis.Redis | None = None
        self._publisher: BatchPublisher | KombuPublisher | None = None

    def _batch(self) -> BatchPublisher | KombuPublisher:
        if self._publisher is None:
            self._publisher = run_publisher(
                self._settings, redis_broker=self._connect, global_keyprefix=self._keyprefix
            )
        return self._publisher

    def _connect(self) -> redis.Redis:
        s = self._settings
        self._client = connect(
            s.effective_broker_url, sentinel_master=s.effective_broker_sentinel_master
        )
        return self._client

    def inline_target(self, state: object) -> BatchPublisher | None:
        """The Redis publisher if the broker is the server and database ``state`` talks to:
        then the client's register script pushes the message itself (one round trip, and no
        run registered without its message). None on RabbitMQ, a separate Redis, a cluster."""
        if self._settings.broker_is_amqp:
            return None
        publisher = self._batch()
        if isinstance(publisher, BatchPublisher) and publisher.same_server(state):
            return publisher
        return None

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        self._batch().publish(run_id, request_json, queue=queue)

    def publish_many(self, messages: Iterable[RunMessage]) -> int:
        return self._batch().publish_many(messages)

    def close(self) -> None:
        publisher, client = self._publisher, self._client
        self._client = self._publisher = None
        if isinstance(publisher, KombuPublisher):
            publisher.close()
        if client is not None:
            client.close()

    def __enter__(self) -> CeleryPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_publisher(
    settings: Settings,
    *,
    redis_broker: Callable[[], redis.Redis],
    global_keyprefix: str = "",
) -> BatchPublisher | KombuPublisher:
    """The publisher for the configured broker, for the client and the recovery sweep alike:
    kombu with publisher confirms on RabbitMQ (its own connection: AMQP channels are not
    shared between threads), pipelined pushes on a Redis broker (``redis_broker`` gives the
    client, called only then)."""
    if settings.broker_is_amqp:
        return KombuPublisher(
            settings.effective_broker_url,
            quorum=settings.broker_quorum_queues,
            ignore_result=settings.result_backend is None,
        )
    return BatchPublisher(
        redis_broker(),
        global_keyprefix=global_keyprefix,
        ignore_result=settings.result_backend is None,
    )
