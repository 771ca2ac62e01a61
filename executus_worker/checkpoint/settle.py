"""Settling a run's broker message in the write that ends the run.

Celery acks a late-acked task after it returns: for every run one more round trip after the
FINISH script (kombu's ``MULTI ZREM HDEL EXEC`` on its unacked index and hash). When the broker
is the run store's own Redis server and database, FINISH removes the message's unacked entry
itself, atomically with the run's ending, and the consumer's ack of that message then only
updates kombu's in-memory bookkeeping (``worker.transport``). On the solo pool that was about a
twentieth of a no-op run (bench/RESULTS.md, Dispatch).

Nothing can be lost by it: a run whose ending is written needs no redelivery (a redelivered
copy is a duplicate the claim turns away), and when the ending is not written -- fenced, or the
store failed -- nothing is settled and kombu acks or restores the message as before. Only a
worker that acks in the process that ran the attempt (solo and threads pools) settles: a
prefork child cannot tell its parent to skip the ack, and there the removal would only be done
twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Settle:
    """The broker message of the attempt running in this context, and how to settle it."""

    tag: str  # kombu's delivery tag of the message
    index_key: str  # kombu's unacked index (a sorted set), as named on the broker
    hash_key: str  # kombu's unacked hash
    settled: Callable[[str], None]  # told the tag once a write removed its entry


_current: ContextVar[Settle | None] = ContextVar("executus_settle", default=None)


@contextmanager
def settling(settle: Settle | None) -> Iterator[None]:
    """Let the attempt run inside this block end by settling ``settle`` (None: nothing)."""
    token = _current.set(settle)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Settle | None:
    """The message the write that ends this context's attempt may settle, if any."""
    return _current.get()
