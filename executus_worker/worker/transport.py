"""kombu's Redis transport, hardened: no broker item and no Redis restart stops the worker.

Stock kombu 5.7 has three ways to take a whole worker down that this module closes:

1. **Undecodable items.** Each popped list item is decoded with ``json.loads`` and turned into
   a message from its ``properties`` before Celery sees it. A stray ``LPUSH`` of plain text,
   a JSON value without the envelope's fields, a body that is not base64 raises out of the
   consumer loop and Celery stops with "Unrecoverable error" (tests/e2e/test_delivery.py).
   Such an item is dropped with one log line naming its queue; it was already popped, so
   dropping it loses nothing that could be delivered.
2. **Hand-built messages.** A message another service built without
   ``properties.delivery_info`` (or without its ``exchange``/``routing_key``) makes kombu raise
   ``KeyError('exchange')`` while recording it as unacked -- and kombu counts ``KeyError`` as a
   *connection* error, so Celery tears the connection down: runs in flight are cancelled and the
   message vanishes unlogged. Such a message is legitimate: it gets the defaults a publish
   would have written (default exchange, routing key = the queue it came from) and is delivered.
   Any other failure to deliver one message drops that message with a log line; it is never
   reported to Celery as a connection loss.
3. **Redis restarts.** When the connection breaks, Celery's consumer closes the kombu
   ``Connection``, which first sets ``Transport.client`` to None and then closes the channels;
   closing a channel restores its unacked messages, which builds a new Redis pool from
   ``self.connection.client.hostname`` -> ``AttributeError``, which Celery treats as
   unrecoverable: the worker stops consuming and exits when its last run ends. A late ack of
   a run that was in flight during the blip goes through the same path. Our channel computes
   its connection parameters once, while the transport still knows them, so its close path and
   late acks reach Redis (or fail with a connection error, which Celery rides through).

Only the envelope is checked here; a well-formed envelope with a bad *task* body is left to
Celery (it logs and acks it) and to our task (which validates its arguments).

One addition: a run's ending may remove its message's unacked entry in the same write
(``checkpoint/settle.py``); the ack of such a message then skips its own round trip
(``SettledTags``, ``SettlingQoS``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from queue import Empty  # what kombu's channels raise for 'nothing to read'
from typing import Any
from urllib.parse import urlsplit

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import json as kombu_json
from redis.sentinel import Sentinel

from executus_worker.checkpoint import hotpath, resp
from executus_worker.core.models import DEFAULT_MAX_PAYLOAD_BYTES
from executus_worker.worker import preclaim
from executus_worker.worker.messages import (
    MAX_PAYLOAD_OPTION,
    run_body_problem,
    transport_notice,
)

log = logging.getLogger(__name__)


def envelope_problem(message: object) -> str | None:
    """Why ``message`` cannot be delivered as a kombu message, or None if it can."""
    if not isinstance(message, dict):
        return f"a JSON {type(message).__name__}, not an object"
    properties = message.get("properties")
    if not isinstance(properties, dict):
        return "no properties object"
    body = _body(message.get("body"), properties)  # once: the task check reads it too
    checks = (
        (isinstance(properties.get("delivery_tag"), str), "no delivery_tag"),
        (isinstance(properties.get("delivery_info", {}), dict), "delivery_info is not an object"),
        (isinstance(message.get("headers") or {}, dict), "headers is not an object"),
        (body is not _BAD, "body is not valid base64"),
    )
    problem = next((problem for ok, problem in checks if not ok), None)
    if problem is None and "task" in (message.get("headers") or {}):
        problem = _task_problem(message, body)
    return problem


def fill_delivery_info(message: dict[str, Any], queue: str) -> None:
    """Give a hand-built message the ``delivery_info`` a publish would have written.

    kombu needs ``exchange`` and ``routing_key`` to record the message as unacked and to
    restore it later; the default exchange ('') with the queue as routing key routes a
    restored copy back to the queue it came from. Values the sender did set are kept.
    Call only after ``envelope_problem`` found none (properties is a dict, delivery_info
    absent or a dict).
    """
    info = message["properties"].setdefault("delivery_info", {})
    if not isinstance(info.get("exchange"), str):
        info["exchange"] = ""
    if not isinstance(info.get("routing_key"), str) or not info["routing_key"]:
        info["routing_key"] = queue


_BAD = object()


def _body(body: object, properties: dict[str, Any]) -> object:
    """The body as bytes, or _BAD when its base64 does not decode."""
    if not body or properties.get("body_encoding") != "base64":
        return body
    if not isinstance(body, str):
        return _BAD
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return _BAD


def _task_problem(message: dict[str, Any], raw: object) -> str | None:
    """Celery task protocol 2 (``raw``: the body as ``_body`` decoded it): headers name the
    task and id; a JSON body is ``[args, kwargs, embed]``. Celery unpacks that body outside
    any error handling."""
    headers = message["headers"]
    if not isinstance(headers.get("task"), str) or not isinstance(headers.get("id"), str):
        return "task message without a task name and id"
    if message.get("content-type") != "application/json":
        return None  # Celery refuses content types it does not accept, and survives that
    try:
        body = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        return None  # undecodable JSON: Celery reports it as a decode error and survives
    shape_ok = (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and isinstance(body[2], dict | None)
    )
    return None if shape_ok else "task body is not [args, kwargs, embed]"


def describe(message: object) -> str:
    """Enough to find the producer, never the whole payload (it may carry user content)."""
    if isinstance(message, dict):
        headers = message.get("headers")
        if isinstance(headers, dict) and isinstance(headers.get("task"), str):
            return f"task {headers['task']!r} id {str(headers.get('id'))[:64]!r}"
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    return text[:120] + ("..." if len(text) > 120 else "")


class SettledTags:
    """Delivery tags whose unacked entry a run's ending already removed (checkpoint/settle.py),
    so that the ack of that message, in this process, need not remove it again.

    Only the process of a worker whose pool runs tasks in it (solo, threads: ``consuming``,
    called at worker start) settles: there a task's ack happens in the process of its FINISH.
    A prefork worker never calls it -- its children could not tell the main process to skip
    an ack -- and a forked process would not match the recorded pid anyway.
    """

    # A tag stays until its ack; one that never comes (the connection dropped first) is a
    # leftover. Past this many, tags are not added: those messages are acked as usual.
    MAX_TAGS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: set[str] = set()
        self._consumer_pid = 0

    def consuming(self) -> None:
        self._consumer_pid = os.getpid()

    def here(self) -> bool:
        """True in a process that consumes messages (where their acks happen)."""
        return self._consumer_pid == os.getpid()

    def add(self, tag: str) -> None:
        with self._lock:
            if len(self._tags) < self.MAX_TAGS:
                self._tags.add(tag)

    def take(self, tag: str) -> bool:
        """True (once) if ``tag`` was settled by its run's ending."""
        with self._lock:
            if tag in self._tags:
                self._tags.remove(tag)
                return True
            return False


SETTLED = SettledTags()


class SettlingQoS(kombu_redis.QoS):
    """kombu's Redis QoS, minus the ack round trip of a message its run's ending settled, and
    with the run's claim in the unacked record's transaction on a solo worker (preclaim.py).

    The unacked record and the ack are kombu's own commands in kombu's own MULTI/EXEC, packed
    by hand on a kept connection of kombu's pool (checkpoint/hotpath.py): redis-py's pipeline
    around them cost ~25% more CPU per message (an eighth of a solo worker's). Under kombu's
    ``global_keyprefix`` (its client prefixes the keys) kombu's own methods run instead."""

    def append(self, message: Any, delivery_tag: str) -> None:
        claims = preclaim.PRECLAIMS
        call = claims.plan(message) if claims is not None and self._same_store(claims) else None
        if self._prefixed():
            super().append(message, delivery_tag)  # never claimed on receipt: _same_store
            return
        delivery = message.delivery_info
        record = kombu_json.dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        tag = delivery_tag.encode()
        commands = [
            resp.command(b"MULTI"),
            resp.command(
                b"ZADD", self.unacked_index_key.encode(), hotpath.encode(time.time()), tag
            ),
            resp.command(b"HSET", self.unacked_key.encode(), tag, record.encode()),
        ]
        if call is not None:  # the claim on receipt, in the same transaction
            commands.append(hotpath.evalsha(call.sha, call.keys, call.args))
        commands.append(resp.command(b"EXEC"))
        sent_at = time.monotonic()
        executed = self._transaction(commands)
        virtual.QoS.append(self, message, delivery_tag)
        for reply in executed[:2]:
            if isinstance(reply, Exception):
                raise reply  # what kombu's own append raises: the message was not recorded
        if claims is not None and call is not None:
            claims.received(delivery_tag, call, executed[2], sent_at)

    def ack(self, delivery_tag: str) -> None:
        if preclaim.PRECLAIMS is not None:
            preclaim.PRECLAIMS.release(delivery_tag)  # a claim made on receipt nobody took
        if SETTLED.take(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)  # kombu's in-memory bookkeeping only
            return
        if self._prefixed():
            super().ack(delivery_tag)
            return
        tag = delivery_tag.encode()
        executed = self._transaction([
            resp.command(b"MULTI"),
            resp.command(b"ZREM", self.unacked_index_key.encode(), tag),
            resp.command(b"HDEL", self.unacked_key.encode(), tag),
            resp.command(b"EXEC"),
        ])  # fmt: skip
        for reply in executed:
            if isinstance(reply, Exception):
                raise reply  # as kombu's pipeline raises the first error
        virtual.QoS.ack(self, delivery_tag)

    def _transaction(self, commands: list[bytes]) -> list[Any]:
        """Send MULTI ... EXEC in one write; EXEC's replies (an error inside stays in its slot,
        as with kombu's pipeline). EXECABORT raises: nothing was written."""
        queued = hotpath.call_many(self._packed_client(), b"".join(commands), len(commands))
        executed = queued[-1]
        if isinstance(executed, Exception):
            raise executed
        replies: list[Any] = executed
        return replies

    def _packed_client(self) -> redis.Redis:
        # A client on the pool kombu's pipelines use (``conn_or_acquire``); hotpath keeps one
        # connection of that pool per thread.
        pool: Any = getattr(self.channel, "pool")  # noqa: B009 -- not in kombu-stubs
        client: redis.Redis | None = getattr(self, "_packed", None)
        if client is None or client.connection_pool is not pool:
            client = self._packed = redis.Redis(connection_pool=pool)
        return client

    def _prefixed(self) -> bool:
        return bool(getattr(self.channel, "global_keyprefix", ""))

    def _same_store(self, claims: preclaim.Preclaims) -> bool:
        channel = self.channel
        target = channel.settle_target() if isinstance(channel, Channel) else None
        return target is not None and target[2:] == claims.address and not self._prefixed()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # Settled or not, kombu's own handling is right (a settled message has nothing left
        # to restore); only forget the tag.
        if preclaim.PRECLAIMS is not None:
            preclaim.PRECLAIMS.release(delivery_tag)
        SETTLED.take(delivery_tag)
        super().reject(delivery_tag, requeue=requeue)


def settle_spec(message: Any) -> list[Any] | None:
    """What a run's ending needs to settle ``message`` (its tag, kombu's unacked index and hash
    keys, and the broker's address to compare with the store's), or None when it cannot: not
    our Redis channel, not a process whose pool runs its tasks, no ack emulation, or a
    Sentinel broker."""
    channel = getattr(message, "channel", None)
    tag = getattr(message, "delivery_tag", None)
    if not isinstance(channel, Channel) or not isinstance(tag, str) or not SETTLED.here():
        return None
    target = channel.settle_target()
    return None if target is None else [tag, *target]


def server_address(pool: Any) -> list[Any] | None:
    """(host, port, db, path) of a redis-py pool, None when resolved per connection."""
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict) or not (kwargs.get("host") or kwargs.get("path")):
        return None  # Sentinel: the master is asked for per connection
    return [kwargs.get("host"), kwargs.get("port"), int(kwargs.get("db") or 0), kwargs.get("path")]


class Channel(kombu_redis.Channel):
    QoS = SettlingQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._params_by_mode: dict[bool, dict[str, Any]] = {}
        self._settle_target: list[Any] | None = None
        self._settle_known = False  # _settle_target computed (it may be None)
        super().__init__(*args, **kwargs)  # computes the async parameters (its first PING)
        # And the synchronous ones now, while the transport still knows its connection:
        # the close path and late acks need them after Celery has let go of it.
        self._connparams(asynchronous=False)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params = self._params_by_mode.get(asynchronous)
        if params is None:
            transport = self.connection
            if transport is None or transport.client is None:
                # Only reachable for a channel closed before it ever connected: a connection
                # error is what Celery expects from a broker that went away.
                raise redis.ConnectionError("the broker connection of this channel is closed")
            # kombu-stubs omit the private methods this class overrides and calls.
            params = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
            self._params_by_mode[asynchronous] = params
        # A copy: callers may edit what they get (kombu's Sentinel path pops keys).
        return dict(params)

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis.Redis for every unacked record and every ack (two per
        # message), and redis-py 8 copies ~170 response callbacks into each: ~0.1 ms per
        # message (bench/dispatch_bench.py). A client is only a pool reference plus those
        # callbacks, so one per pool does the same work; a new pool (after a reconnect) gets
        # a new client.
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool
        cached = self.__dict__.get("_executus_sync_client")
        if cached is None or cached.connection_pool is not pool:
            cached = super()._create_client(asynchronous=False)  # type: ignore[misc]
            self.__dict__["_executus_sync_client"] = cached
        return cached

    def settle_target(self) -> list[Any] | None:
        """[unacked index key, unacked hash key, *server_address] for ``settle_spec``."""
        if not self._settle_known:
            address = server_address(self.pool) if self.ack_emulation else None
            if address is not None:
                prefix = self.global_keyprefix or ""
                keys = [prefix + self.unacked_index_key, prefix + self.unacked_key]
                self._settle_target = [*keys, *address]
            self._settle_known = True
        return self._settle_target

    def close(self) -> None:
        try:
            super().close()
        finally:
            # Restoring the unacked messages on close opens a new pool after kombu has
            # disconnected the old ones; do not leave its socket open until GC.
            self._disconnect_pools()  # type: ignore[attr-defined]

    def _brpop_read(self, **options: Any) -> bool:
        try:
            # kombu-stubs omit this private method; it is the one place an item is decoded.
            result: bool = super()._brpop_read(**options)  # type: ignore[misc]
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: an item nested deeper than json.loads can recurse.
            log.error("dropped a broker item that is not JSON (%s)", exc)
            raise Empty() from exc
        return result


class Transport(kombu_redis.Transport):
    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = getattr(client, "transport_options", None) or {}
        self.max_payload_bytes = int(options.get(MAX_PAYLOAD_OPTION, DEFAULT_MAX_PAYLOAD_BYTES))

    def _deliver(self, message: Any, queue: str | None) -> None:
        # The body check first: envelope_problem parses the body, which must not recurse.
        problem = run_body_problem(message, max_bytes=self.max_payload_bytes)
        problem = problem or envelope_problem(message)
        if problem is not None:
            # A broken executus.run message that names a run is delivered as a notice for that
            # run (see messages.transport_notice): its sender finds a record, not "not found".
            notice = transport_notice(message, problem, queue) if queue else None
            log.error(
                "%s a malformed message on queue %s (%s): %s",
                "rejected" if notice else "dropped",
                queue,
                problem,
                describe(message),
            )
            if notice is None:
                return
            message = notice
        if queue:
            fill_delivery_info(message, queue)
        try:
            super()._deliver(message, queue)
        except (redis.RedisError, OSError):
            raise  # the broker itself failed: Celery reconnects
        except Exception as exc:
            # kombu reports any KeyError as a connection error, and Celery answers those by
            # tearing down the connection (and, by default, the runs in flight). One message
            # kombu could not take must cost that message only. One line, no traceback: an
            # exception's text may quote the payload.
            log.error(
                "dropped a message on queue %s that could not be delivered (%s: %.200s): %s",
                queue,
                type(exc).__name__,
                exc,
                describe(message),
            )
            log.debug("delivery failure on queue %s", queue, exc_info=True)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The hardened channel on kombu's Sentinel channel.

    kombu builds each Sentinel pool from ``self.connection.client.alt`` (the URL's list of
    sentinels) -- the same path as (3) above: after Celery let go of the connection, closing
    the channel raised ``AttributeError`` and the worker stopped consuming (seen in
    tests/faults/test_sentinel_failover.py). The sentinels are read once, while the transport
    knows them; the master itself is still asked of the sentinels on every new connection.
    """

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        hosts = [urlsplit(url) for url in connection.client.alt]
        self._sentinel_hosts = [
            (url.hostname, url.port or connection.default_port)
            for url in hosts
            if url.scheme == "sentinel" and url.hostname
        ]
        super().__init__(connection, *args, **kwargs)

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        # kombu's own method with the sentinels it read once (see the class docstring).
        params = self._connparams(asynchronous)
        hosts = self._sentinel_hosts or [(params["host"], params["port"])]
        params.pop("host", None)
        params.pop("port", None)
        manager = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        # kombu closes these managers' sentinel connections in _disconnect_pools.
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        master_name = getattr(self, "master_name", None)
        if master_name is None:
            raise ValueError("'master_name' transport option must be specified.")
        credentials = {k: params[k] for k in ("username", "password") if k in params}
        master = manager.master_for(  # type: ignore[no-untyped-call]
            master_name, redis.Redis, **credentials
        )
        return master.connection_pool


class SentinelTransport(Transport, kombu_redis.SentinelTransport):
    """The hardened transport for ``sentinel://`` brokers (kombu's stock one otherwise)."""

    Channel = SentinelChannel
