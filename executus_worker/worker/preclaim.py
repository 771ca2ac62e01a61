"""Claiming a run before its handler asks: on receipt (solo pool, Redis broker), or sent
as the task starts (every pool, ``Ahead``).

A solo worker executes a message the moment it receives it: kombu records the message as
unacked (``MULTI ZADD HSET EXEC``), Celery calls the task, and the task's first act is the CLAIM
script -- two round trips back to back, and on a busy machine each costs far more than the work
in it (bench/RESULTS.md, Dispatch). When the broker is the run store's own Redis server and
database, the claim goes into kombu's transaction instead: the unacked record and the claim are
written atomically in one round trip (``transport.SettlingQoS.append``). When Celery hands the
message to the pool, the claim's raw reply goes with it in the task request
(``RunDelivery.revoked``, ``PRECLAIM_KEY``), and the task's handler takes it
(``delivering``/``take``) instead of claiming. It is the same script with the same fence and
the same owner (this process), and the lease counts from when it was sent.

Only a message Celery will execute at once is claimed early: ``executus.run`` with no ETA and
no expiry, not revoked, the run id readable from its first argument. A claim whose message
never reached the pool (revoked after receipt) is released when the message is acked or
rejected, and one the task did not take (the handler could not be built, or read another run
id) when the task ends: the run goes back to ``interrupted`` -- re-published by the next sweep,
not counted as a crash. If the process dies first, the lease expires as it does for any crash.
A claim whose reply is an error (NOSCRIPT after a Redis restart) is dropped and the task claims
as usual.

Not on prefork: there the message is received by the main process and run by a child, and a
claim names its owner so that a restarted worker can prove that owner dead
(``worker/identity.py``). A claim in the main process's name would let a restart take back a
run that an orphaned child is still executing (a SIGKILLed main process leaves its children
to finish their step). Nor on threads pools, where a message may wait for a free thread.

Everywhere else the executing process sends the claim itself, first thing in the task, and
reads its reply only when the handler claims (``Ahead``, ``hotpath.send``): the round trip
overlaps Celery's own set-up of the task, the message's validation and the handler's, instead
of following them. Same script, same fence, same owner (the executing process, so safe on
prefork), the same rules for one nobody took; any failure (a cluster client, a failed send,
NOSCRIPT, a lost reply) leaves the claim to the handler as before.
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

import redis
from celery.worker import state as worker_state

from executus_worker.checkpoint.hotpath import Pending
from executus_worker.checkpoint.redis_store import ClaimCall, RedisStore
from executus_worker.checkpoint.store import ClaimResult, ClaimStatus
from executus_worker.errors import ExecutusError, StoreError
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


# The task request field that carries the ``Preclaimed`` of a message to its task (in this
# process: solo only).
PRECLAIM_KEY = "executus_preclaim"


class Preclaims:
    """The claims this consuming process made on receipt, by delivery tag, until the message
    is handed to the pool (``forward``) or acked without ever being (``release``)."""

    # Claims are handed on within a millisecond; more than this many waiting means they are
    # not (a bug): stop claiming early rather than hold leases nobody runs.
    MAX_PENDING = 256

    def __init__(
        self,
        store: RedisStore,
        settings: Settings,
        owner: Callable[[], str],
        *,
        address: list[Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.address = address  # the state Redis (transport.server_address)
        self._clock = clock
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
        return _claim_call(self.store, self.settings, run_id, self.owner(), self._clock())

    def received(self, tag: str, call: ClaimCall, reply: object, sent_at: float) -> None:
        """Keep the claim for the message's task. A claim that failed (an error reply: NOSCRIPT
        after a Redis restart, say) or whose record does not decode is dropped: the task claims
        as usual and meets the run as it is."""
        try:
            if isinstance(reply, Exception):
                raise reply
            result = self.store.claim_result(call, reply)
        except (redis.RedisError, ExecutusError) as exc:
            log.debug("run %s: claim on receipt failed (%s); claiming in the task",
                      call.run_id, exc)  # fmt: skip
            return
        with self._lock:
            self._pending[tag] = Preclaimed(call.run_id, call.args[2], result, sent_at)

    def forward(self, tag: str) -> Preclaimed | None:
        """The claim made on receipt of ``tag``, now handed with the message to the pool (the
        task's to take or release: ``delivering``)."""
        with self._lock:
            return self._pending.pop(tag, None)

    def release(self, tag: str) -> None:
        """The message is acked or rejected without ever reaching the pool (revoked after
        receipt, say): give the run back."""
        with self._lock:
            found = self._pending.pop(tag, None)
        if found is not None:
            _release(self.store, found, self._clock())


def _claim_call(
    store: RedisStore, settings: Settings, run_id: str, owner: str, now: float
) -> ClaimCall:
    """The CLAIM the handler would make (``RunRecorder.try_claim``), to send earlier."""
    return store.claim_call(
        run_id,
        owner=owner,
        lease_ttl_s=settings.lease_ttl_s,
        max_attempts=settings.max_recovery_attempts,
        now=now,
    )


def _release(store: RedisStore, claim: Preclaimed, now: float) -> None:
    fence = claim.result.fence
    if claim.result.status is not ClaimStatus.CLAIMED or fence is None:
        return
    log.warning("run %s: claimed on receipt but not started; releasing it", claim.run_id)
    try:
        store.interrupt(claim.run_id, fence=fence, now=now, reason=RELEASE_REASON)
    except Exception as exc:  # a lost fence, an outage: the lease expires instead
        log.warning("run %s: releasing the unstarted claim failed: %s", claim.run_id, exc)


class Ahead:
    """A CLAIM the executing process sent as its task started, its reply not read yet: the
    round trip overlaps the task's own start (Celery's, message validation, the handler's
    set-up) instead of following it. The owner is the process that executes the run, so this
    is safe on every pool. ``resolve`` reads the reply when the handler claims."""

    def __init__(
        self, store: RedisStore, call: ClaimCall, pending: Pending, owner: str, sent_at: float
    ) -> None:
        self.run_id = call.run_id
        self.owner = owner
        self._store = store
        self._call = call
        self._pending = pending
        self._sent_at = sent_at

    def resolve(self) -> Preclaimed | None:
        """The claim, or None when it did not work out (NOSCRIPT after a Redis restart, a
        dropped connection, a record that does not decode and was not claimed): the handler
        then claims as usual and meets the run as it is -- BUSY if a claim whose reply was lost
        did apply, exactly as a retried claim would. A reply that timed out raises StoreError,
        as the handler's own claim would have after the same wait (the task retries)."""
        try:
            result = self._store.claim_result(self._call, self._pending.read())
        except redis.TimeoutError as exc:
            raise StoreError(f"redis claim for run {self.run_id!r} failed: {exc}") from exc
        except (redis.RedisError, OSError, ExecutusError) as exc:
            log.debug("run %s: claim sent ahead failed (%s); claiming again", self.run_id, exc)
            return None
        return Preclaimed(self.run_id, self.owner, result, self._sent_at)


def send_ahead(
    store: RedisStore,
    settings: Settings,
    run_id: str,
    owner: str,
    *,
    clock: Callable[[], float] = time.time,
) -> Ahead | None:
    """Send the CLAIM the handler would make for ``run_id`` now, its reply read when the handler
    claims (``delivering``/``take``). None where the store cannot (a cluster) or the send
    failed: the handler claims as usual."""
    call = _claim_call(store, settings, run_id, owner, clock())
    sent_at = time.monotonic()
    try:
        pending = store.send_claim(call)
    except (redis.RedisError, OSError) as exc:
        log.debug("run %s: could not send the claim ahead (%s)", run_id, exc)
        return None
    return None if pending is None else Ahead(store, call, pending, owner, sent_at)


class _Holder:
    def __init__(self, claim: Preclaimed | Ahead) -> None:
        self.claim = claim
        self.taken = False


_current: ContextVar[_Holder | None] = ContextVar("executus_preclaim", default=None)


@contextlib.contextmanager
def delivering(store: Callable[[], RedisStore], forwarded: object) -> Iterator[None]:
    """Run a task with the claim its message was received with, or the one its task sent
    ahead (if any), for ``take``; one the handler did not take is released when the task
    ends."""
    holder = _Holder(forwarded) if isinstance(forwarded, Preclaimed | Ahead) else None
    token = _current.set(holder)
    try:
        yield
    finally:
        _current.reset(token)
        if holder is not None and not holder.taken:
            _release_untaken(store, holder.claim)


def _release_untaken(store: Callable[[], RedisStore], claim: Preclaimed | Ahead) -> None:
    try:
        found = claim.resolve() if isinstance(claim, Ahead) else claim
    except StoreError as exc:  # the reply never came: if the claim applied, its lease expires
        log.warning("run %s: reading the unstarted claim failed: %s", claim.run_id, exc)
        return
    if found is not None:
        _release(store(), found, time.time())


def take(run_id: str, owner: str) -> Preclaimed | None:
    """The claim this task's message was received with, or the one its task sent ahead (its
    reply read now), if it is ``owner``'s claim of ``run_id`` (it is then the caller's, to
    execute or end). None also when a claim sent ahead did not work out: claim as usual."""
    holder = _current.get()
    if holder is None or holder.taken:
        return None
    if holder.claim.run_id != run_id or holder.claim.owner != owner:
        return None
    holder.taken = True
    claim = holder.claim
    return claim.resolve() if isinstance(claim, Ahead) else claim


# The consuming solo-pool process's claims on receipt (set by the worker at start; None
# elsewhere: prefork and threads pools, other brokers).
PRECLAIMS: Preclaims | None = None
