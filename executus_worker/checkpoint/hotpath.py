"""The per-step and per-run scripts as hand-packed EVALSHA on a connection each thread keeps.

A step's save is one round trip; what redis-py adds around it on every command (packing each
argument with type checks, taking a connection from the pool and releasing it, the pool's
"has this connection unread data?" probe, which is one more ``recv`` system call, and its
observability counters) cost as much as the round trip itself (bench/step_bench.py
--profile: a redis-py ``EVALSHA`` of the save took 66 us where a held connection with the
command packed by hand took 34 us and a ``PING`` 43 us, on the same server).

So each thread checks one connection out of the client's pool once and keeps it. That is safe
because a command here is always sent and its reply read completely before the call returns;
any other outcome disconnects the connection (it reconnects on its next use), so no reply is
ever left unread on it. The one exception, ``send``, leaves its reply for later (a task sends
its CLAIM as it starts and reads the reply when its handler claims): the next command on the
connection reads that reply first and keeps it for its owner.

Before each command the connection gets the probe the pool gives it on every checkout (a
closed or dirty socket is replaced); errors and retries are redis-py's own: the connection's
``retry`` policy, exactly as ``Redis.execute_command`` applies it. After a fork the kept
connection belongs to the parent and is dropped unused (redis-py's pool resets itself the
same way). When the thread ends, its connection goes back to the pool.

Only for a plain ``redis.Redis`` (Sentinel's master client included); clients without a single
connection pool (Redis Cluster) take redis-py's normal path.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import redis
from redis.connection import ConnectionPool

from executus_worker.checkpoint import resp


def encode(value: object) -> bytes:
    """One argument as redis-py's encoder writes it (str as UTF-8, numbers as repr)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):  # before int: redis-py refuses booleans too
        raise TypeError("a bool is no Redis argument; pass '1' or '0'")
    if isinstance(value, int | float):
        return repr(value).encode()
    raise TypeError(f"a {type(value).__name__} is no Redis argument")


def evalsha(sha: str, keys: Iterable[str], args: Iterable[object]) -> bytes:
    """``EVALSHA sha numkeys key... arg...`` as one RESP command."""
    names = [k.encode() for k in keys]
    # Most arguments are str: encoded inline, the rest through ``encode`` (a profile of a
    # prefork child put this packing at 8% of its CPU with a call per argument).
    packed = [a.encode() if a.__class__ is str else encode(a) for a in args]
    return resp.command(b"EVALSHA", sha.encode(), b"%d" % len(names), *names, *packed)


class _Kept:
    """A thread's connection; gives it back to the pool when the thread's locals go."""

    __slots__ = ("__weakref__", "conn", "pending", "pid")

    def __init__(self, pool: ConnectionPool) -> None:
        self.conn: Any = pool.get_connection()
        self.pid = os.getpid()
        self.pending: Pending | None = None  # a command sent by ``send``, its reply unread
        weakref.finalize(self, _give_back, weakref.ref(pool), self.conn, self.pid)


def _give_back(pool_ref: weakref.ref[ConnectionPool], conn: Any, pid: int) -> None:
    pool = pool_ref()
    if pool is not None and pid == os.getpid():
        pool.release(conn)


_LOCALS: weakref.WeakKeyDictionary[ConnectionPool, threading.local] = weakref.WeakKeyDictionary()
_LOCALS_LOCK = threading.Lock()


def supported(client: object) -> bool:
    """True for a client with one connection pool (plain Redis, Sentinel's master client)."""
    return isinstance(client, redis.Redis) and isinstance(
        getattr(client, "connection_pool", None), ConnectionPool
    )


def call(client: redis.Redis, payload: bytes) -> Any:
    """Send one packed command on this thread's kept connection and return its parsed reply.

    An error reply raises as redis-py raises it (``NoScriptError``, ``ResponseError``);
    connection errors are retried by the connection's own policy, then raised.
    """
    return _exchange(client, payload, None)


def call_many(client: redis.Redis, payload: bytes, count: int) -> list[Any]:
    """Send ``count`` packed commands in one write and read their replies in order (one round
    trip). An error reply stays in its slot as the exception redis-py would raise, as with
    ``pipeline.execute(raise_on_error=False)``; connection errors raise."""
    replies: list[Any] = _exchange(client, payload, count)
    return replies


def send(client: redis.Redis, payload: bytes) -> Pending:
    """Send one packed command on this thread's kept connection and return without its reply,
    so the caller can overlap the round trip with work of its own; ``Pending.read`` gives the
    reply. A later command on this connection reads it first and keeps it for ``read``, so
    the connection stays in step whatever happens in between.

    No retry: a failed send raises (the connection is disconnected) and the caller does the
    work the ordinary way instead. Nor the probe: a connection the server closed, or one to a
    Sentinel master that is no longer one, answers with an error at ``read``, and the caller
    again does the work the ordinary way, probe included."""
    kept = _kept(client, probe=False)
    conn = kept.conn
    try:
        conn.send_packed_command([payload])
    except BaseException:
        conn.disconnect()
        raise
    pending = kept.pending = Pending(kept)
    return pending


class Pending:
    """A command ``send`` sent, whose reply is read once: by ``read``, or by the next command
    on the same connection (which needs it in step), whichever comes first."""

    __slots__ = ("_error", "_kept", "_read", "_reply")

    def __init__(self, kept: _Kept) -> None:
        self._kept = kept
        self._read = False
        self._reply: Any = None
        self._error: BaseException | None = None

    def read(self) -> Any:
        """The reply; an error reply raises as redis-py raises it, a connection error too."""
        self._drain()
        if self._error is not None:
            raise self._error
        return self._reply

    def _drain(self) -> None:
        if self._read:
            return
        self._read = True
        kept = self._kept
        if kept.pending is self:
            kept.pending = None
        try:
            self._reply = kept.conn.read_response()
        except redis.ResponseError as exc:
            self._error = exc  # a complete error reply: the connection is in step
        except Exception as exc:
            kept.conn.disconnect()  # a reply cut short must not be read by the next command
            self._error = exc
        except BaseException:
            kept.conn.disconnect()
            self._error = redis.ConnectionError("the reply was not read (interrupted)")
            raise


def _kept(client: redis.Redis, *, probe: bool = True) -> _Kept:
    """This thread's kept connection, in step (and checked: ``probe``), ready for a command."""
    pool: ConnectionPool = client.connection_pool
    local = _LOCALS.get(pool)
    if local is None:
        with _LOCALS_LOCK:
            local = _LOCALS.setdefault(pool, threading.local())
    kept: _Kept | None = getattr(local, "kept", None)
    if kept is None or kept.pid != os.getpid():
        kept = local.kept = _Kept(pool)
    if kept.pending is not None:
        kept.pending._drain()  # an earlier send's reply first: it is on the wire before ours
    conn = kept.conn
    if not probe:
        return kept
    # The pool's own check before it hands out a connection: one non-blocking read. Readable
    # means the server closed it (a Redis restart, an idle timeout) or it holds stray bytes;
    # either way start over on a fresh socket rather than fail the first command after.
    # What the pool checks when a connection comes back: whether it still owns it. Under
    # Sentinel it does not once it has learnt of a new master: the kept connection still
    # points at the old one, which may have become a replica.
    if not pool.owns_connection(conn):
        conn.disconnect()
    try:
        stale = conn.can_read()
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        stale = True
    if stale:
        conn.disconnect()
    return kept


def _exchange(client: redis.Redis, payload: bytes, count: int | None) -> Any:
    conn = _kept(client).conn

    def once() -> Any:
        conn.send_packed_command([payload])
        return conn.read_response() if count is None else resp.read_replies(conn, count)

    try:
        return conn.retry.call_with_retry(once, lambda _error: conn.disconnect())
    except redis.ResponseError:
        raise  # a complete error reply: the connection is in step
    except BaseException:
        # Anything else may have cut a reply short (a timeout, KeyboardInterrupt, a signal's
        # exception): never leave unread bytes on a connection that is used again.
        conn.disconnect()
        raise
