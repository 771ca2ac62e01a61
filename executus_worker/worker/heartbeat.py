"""Leases: what an owner knows about its claim, and the per-process thread that renews them.

An owner must never act on a lease it no longer holds. It cannot ask Redis before every model
or tool call (that is a round trip each), so it keeps a conservative local bound instead:

    valid_until = (monotonic time the last successful renewal, or the claim, was SENT) + TTL

Redis starts the TTL when it *executes* the command, which is after it was sent, so the real
lease outlives this bound (clock-rate drift between hosts aside: Redis expires by its own
clock). ``Lease.ensure`` -- the guard the run calls before every model call and every tool call
-- lets the call start only while at least ``margin_s`` of that bound remains; otherwise the run
*pauses*: it wakes the renewal thread and waits until a renewal succeeds (it continues), the
lease is reported lost (it stops with OwnershipLost, writing nothing more), or a stop arrives
(shutdown, cancel: it stops like at any step boundary).

What this excludes and what it does not (the README states it for users): a call starts only
while the lease is certainly valid for ``margin_s`` more seconds. A process that is paused
(SIGSTOP, a GC or GIL stall) *between* the check and the start of the call for longer than the
margin can still start that call after its lease expired, overlapping a new owner by at most
(pause - margin). Everything such a call returns is still rejected: every write is fenced.

One daemon thread per process renews every lease it holds in ONE pipelined round trip per
interval (``RunStore.renew_many``) on a client with a short socket timeout: one slow lease
cannot delay the others, and the cost is one round trip per process per interval whatever the
number of runs. Renewal answers: OK -> extend the bound; CANCEL -> request CANCEL on the run's
token (it also arrives on every save's reply); LOST -> a newer claim owns the run (or it
ended): request LOST_OWNERSHIP so this attempt writes nothing more.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from executus_worker.checkpoint.store import Fence, RenewStatus, RunStore
from executus_worker.core.stop import OwnershipLost, StopReason, StopToken
from executus_worker.errors import StoreError

log = logging.getLogger(__name__)

# How often a paused run re-checks its lease while it waits for a renewal.
_PAUSE_POLL_S = 0.05


class Lease:
    """One claimed attempt's lease, as its owner knows it."""

    def __init__(
        self,
        *,
        run_id: str,
        fence: Fence,
        lease_ttl_s: float,
        margin_s: float,
        stop: StopToken,
        sent_at: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.fence = fence
        self._ttl_s = lease_ttl_s
        self._margin_s = margin_s
        self._stop = stop
        self._monotonic = monotonic
        # The claim itself started the lease: it was sent at ``sent_at``.
        self._valid_until = sent_at + lease_ttl_s
        self._heartbeats: Heartbeats | None = None
        self._changed = threading.Event()
        # The renewal thread has no run context: name the run in its log lines explicitly.
        self._log_fields = {"run_id": run_id, "epoch": fence.epoch}
        self.lost = False
        self.failures = 0  # consecutive failed renewals

    def remaining(self) -> float:
        """Seconds the lease is certainly still ours (negative once that is unknown)."""
        return self._valid_until - self._monotonic()

    # -- called by the renewal thread ------------------------------------------------------

    def renewed(self, status: RenewStatus, *, sent_at: float) -> None:
        self.failures = 0
        if status is RenewStatus.LOST:
            self.lost = True
            self._stop.request(StopReason.LOST_OWNERSHIP, f"lease of epoch {self.fence.epoch} lost")
        else:
            self._valid_until = max(self._valid_until, sent_at + self._ttl_s)
            if status is RenewStatus.CANCEL:
                self._stop.request(StopReason.CANCEL, "cancel requested")
        self._changed.set()

    def renewal_failed(self, error: Exception) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 10 == 0:
            log.warning(
                "run %s: lease renewal failed %d time(s), %.1fs of certain lease left: %s",
                self.run_id, self.failures, self.remaining(), error,
                extra=self._log_fields,
            )  # fmt: skip
        self._changed.set()

    # -- called by the run -----------------------------------------------------------------

    def ensure(self, what: str) -> None:
        """The run's guard before a model or tool call (see the module docstring)."""
        if self.lost:
            raise OwnershipLost(f"lease of epoch {self.fence.epoch} lost before {what}")
        if self.remaining() >= self._margin_s:
            return
        started = self._monotonic()
        log.warning(
            "run %s: paused before %s: lease certain for only %.2fs (margin %.2fs)",
            self.run_id, what, self.remaining(), self._margin_s, extra=self._log_fields,
        )  # fmt: skip
        while True:
            self._changed.clear()
            if self._heartbeats is not None:
                self._heartbeats.wake()
            if self.lost:
                raise OwnershipLost(f"lease of epoch {self.fence.epoch} lost before {what}")
            self._stop.check()
            if self.remaining() >= self._margin_s:
                log.info(
                    "run %s: lease renewed, resuming after %.2fs paused",
                    self.run_id, self._monotonic() - started,
                )  # fmt: skip
                return
            self._changed.wait(_PAUSE_POLL_S)


class Heartbeats:
    """The per-process renewal thread and the leases it keeps alive."""

    def __init__(
        self,
        store: RunStore,
        *,
        lease_ttl_s: float,
        interval_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = lease_ttl_s
        self._interval_s = interval_s if interval_s is not None else lease_ttl_s / 3
        # After a failed round trip, try again sooner: every second counts against the margin.
        self._retry_s = min(self._interval_s, max(0.1, self._interval_s / 4))
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}
        self._pid: int | None = None
        self._wake = threading.Event()
        self.round_trips = 0  # renewal round trips sent by this process (tests, bench)

    @property
    def interval_s(self) -> float:
        return self._interval_s

    def hold(self, lease: Lease) -> _Held:
        """Keep ``lease`` renewed for the duration of a ``with`` block."""
        return _Held(self, lease)

    def wake(self) -> None:
        """Renew now (a paused run is waiting for a renewal)."""
        self._wake.set()

    def tick(self) -> bool:
        """Renew every held lease once, in one round trip. False if the round trip failed."""
        with self._lock:
            leases = list(self._leases.items())
        if not leases:
            return True
        sent_at = self._monotonic()
        self.round_trips += 1
        try:
            replies = self._store.renew_many(
                [(lease.run_id, lease.fence) for _, lease in leases], lease_ttl_s=self._ttl_s
            )
        except StoreError as exc:
            for _, lease in leases:
                lease.renewal_failed(exc)
            return False
        ok = True
        for (key, lease), reply in zip(leases, replies, strict=True):
            if isinstance(reply, StoreError):
                lease.renewal_failed(reply)
                ok = False
                continue
            lease.renewed(reply, sent_at=sent_at)
            if lease.lost:
                self._release(key)  # nothing left to renew; the run is stopping
        return ok

    def _add(self, lease: Lease) -> int:
        key = id(lease)
        lease._heartbeats = self
        with self._lock:
            self._leases[key] = lease
            # After a fork the parent's thread does not exist here: start this process's own.
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="executus-heartbeat", daemon=True).start()
        return key

    def _release(self, key: int) -> None:
        with self._lock:
            self._leases.pop(key, None)

    def _run(self) -> None:
        ok = True
        while True:
            woken = self._wake.wait(self._interval_s if ok else self._retry_s)
            self._wake.clear()
            try:
                ok = self.tick()
            except Exception:  # never let one bad renewal end renewals for every run
                log.exception("heartbeat tick failed")
                ok = False
            if woken:
                # A paused run asked for this renewal; do not spin if Redis answers fast.
                time.sleep(_PAUSE_POLL_S)


class _Held:
    def __init__(self, heartbeats: Heartbeats, lease: Lease) -> None:
        self._heartbeats = heartbeats
        self._lease = lease
        self._key: int | None = None

    def __enter__(self) -> Lease:
        self._key = self._heartbeats._add(self._lease)
        return self._lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._key is not None:
            self._heartbeats._release(self._key)
