"""Commands written as RESP by hand, for the few bulk paths where redis-py's packing dominates.

redis-py packs every argument of every command on its own (type checks, encoding, a length
header): for a recovery sweep of 100,000 runs that was most of the client's time. Where one
command shape repeats thousands of times, the caller builds the bytes once per batch with
``bulk`` and sends them with ``send_packed``, which reads the replies as redis-py's pipeline
does. Everything else keeps using redis-py's normal API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    # One format per argument, no call per argument: this packs every step's save.
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


def send_packed(client: redis.Redis, payload: bytes, count: int) -> list[Any]:
    """Send ``count`` packed commands in one write and read their replies in order: one round
    trip. An error reply stays in its slot, as with ``pipeline.execute(raise_on_error=False)``;
    a broken connection is dropped, not returned to the pool half-read."""
    (replies,) = send_packed_many([(client, payload, count)])
    return replies


def send_packed_many(batches: Sequence[tuple[redis.Redis, bytes, int]]) -> list[list[Any]]:
    """``send_packed`` to several servers (a cluster's masters) at once: every batch is
    written before any reply is read, so the round trips overlap (as redis-py's cluster
    pipeline does)."""
    held: list[tuple[Any, Any]] = []
    try:
        for client, payload, _ in batches:
            pool = client.connection_pool
            conn = pool.get_connection()
            held.append((pool, conn))
            conn.send_packed_command([payload])  # type: ignore[no-untyped-call]  # redis-py
        return [
            read_replies(conn, count)
            for (_, conn), (_, _, count) in zip(held, batches, strict=True)
        ]
    except BaseException:
        for _, conn in held:
            conn.disconnect()
        raise
    finally:
        for pool, conn in held:
            pool.release(conn)


def read_replies(conn: Any, count: int) -> list[Any]:
    """The next ``count`` replies on a redis-py connection, in order; an error reply stays in
    its slot as the exception redis-py raises for it (the replies after it are still read)."""
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies
