"""Claiming a run in the round trip that receives its message (solo pool, Redis broker).

A solo worker executes a message the moment it receives it: kombu records the message as
unacked (``MULTI ZADD HSET EXEC``), Celery calls the task, and the task's first act is the
CLAIM script -- two round trips back to back, and on a busy machine each costs far more than
the work in it (bench/RESULTS.md, Dispatch). When the broker is the run store's own Redis
server and database, the claim goes into kombu's transaction instead, so the unacked record
and the claim are written atomically in one round trip; the handler then takes that result
(``take``) instead of claiming again. Nothing else about a claim changes: the same script, the
same fence, the lease counted from when it was sent.

Only a message Celery will execute at once is claimed early: ``executus.run`` with no ETA and
no expiry, not revoked, the run id readable from its first argument. A claim the task did not
take (the task never ran, or the handler could not read the message the same way) is released
when the message is acked or rejected: the run goes back to ``interrupted`` -- re-published by
the next sweep, not counted as a crash. If the process dies first, the lease expires as it
does for any crash. Prefork and threads pools claim in the task as before: there the message
may wait for a free process or thread after it is received.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from celery.worker import state as worker_state

from executus_worker.checkpoint.redis_store import ClaimCall, RedisStore
from executus_worker.checkpoint.store import ClaimResult, ClaimStatus
from executus_worker.errors import ExecutusError
from executus_worker.publish import TASK_RUN
from executus_worker.settings import Settings
from executus_worker.worker.messages import first_arg_run_id

log = logging.getLogger(__name__)

RELEASE_REASON = "its message was received but the attempt never started"


@dataclass(frozen=True)
class Preclaimed:
    """A claim made on receipt, for the handler of that delivery to take."""

    run_id: str
    owner: str
    result: ClaimResult
    sent_at: float  # monotonic time the claim was sent: when its lease certainly started


class Preclaims:
    """The claims made on receipt in this (consuming, solo-pool) process, by delivery tag."""

    # Claims are taken within a millisecond; more than this many waiting means they are not
    # being taken (a bug): stop claiming early rather than hold leases nobody runs.
    MAX_PENDING = 64

    def __init__(
        self,
        store: RedisStore,
        settings: Settings,
        owner: Callable[[], str],
        *,
        address: list[Any],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.address = address  # the state Redis (transport.server_address)
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._pending: dict[str, Preclaimed] = {}

    def plan(self, message: Any) -> ClaimCall | None:
        """The claim to send with ``message``'s unacked record, or None to claim in the task."""
        headers = getattr(message, "headers", None) or {}
        if headers.get("task") != TASK_RUN or headers.get("eta") or headers.get("expires"):
            return None
        if headers.get("id") in worker_state.revoked or len(self._pending) >= self.MAX_PENDING:
            return None
        raw = getattr(message, "_raw", None)
        run_id = first_arg_run_id(raw) if isinstance(raw, dict) else None
        if run_id is None:
            return None
        s = self.settings
        return self.store.claim_call(
            run_id,
            owner=self.owner(),
            lease_ttl_s=s.lease_ttl_s,
            max_attempts=s.max_recovery_attempts,
            now=self._clock(),
        )

    def received(self, tag: str, call: ClaimCall, reply: object, sent_at: float) -> None:
        """Keep the claim's outcome for the task. A claim that failed (a reply that is an
        error, a record that does not decode) is left for the task's own claim to meet."""
        if isinstance(reply, Exception):
            log.debug("run %s: claim on receipt failed (%s); claiming in the task",
                      call.run_id, reply)  # fmt: skip
            return
        try:
            result = self.store.claim_result(call, reply)
        except ExecutusError as exc:
            log.debug("run %s: claim on receipt unreadable (%s)", call.run_id, exc)
            return
        owner = call.args[2]
        with self._lock:
            self._pending[tag] = Preclaimed(call.run_id, owner, result, sent_at)

    def take(self, tag: str | None, run_id: str, owner: str) -> Preclaimed | None:
        """The claim made on receipt of delivery ``tag``, if it is for ``run_id`` and ``owner``
        (it is then the caller's, to execute or end)."""
        if tag is None:
            return None
        with self._lock:
            found = self._pending.get(tag)
            if found is None or found.run_id != run_id or found.owner != owner:
                return None
            del self._pending[tag]
            return found

    def release(self, tag: str) -> None:
        """The message is being acked or rejected: a claim made on its receipt that nobody took
        gives the run back (``interrupted``), so the sweep re-publishes it."""
        with self._lock:
            found = self._pending.pop(tag, None)
        if found is None:
            return
        fence = found.result.fence
        if found.result.status is not ClaimStatus.CLAIMED or fence is None:
            return
        log.warning("run %s: claimed on receipt but not started; releasing it", found.run_id)
        try:
            self.store.interrupt(
                found.run_id, fence=fence, now=self._clock(), reason=RELEASE_REASON
            )
        except Exception as exc:  # a lost fence, an outage: the lease expires instead
            log.warning("run %s: releasing the unstarted claim failed: %s", found.run_id, exc)


# The delivery tag of the message the current task is handling (set by the task shell).
_current_tag: ContextVar[str | None] = ContextVar("executus_delivery_tag", default=None)


@contextlib.contextmanager
def delivering(tag: str | None) -> Iterator[None]:
    token = _current_tag.set(tag)
    try:
        yield
    finally:
        _current_tag.reset(token)


def current_tag() -> str | None:
    return _current_tag.get()


# The consuming solo-pool process's claims on receipt (set by the worker at start; None
# elsewhere: prefork children, threads pools, other brokers).
PRECLAIMS: Preclaims | None = None
