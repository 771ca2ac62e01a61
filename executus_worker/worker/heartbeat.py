"""Heartbeats: renew each running run's lease and carry the durable cancel flag to the run.

One daemon thread per process renews every lease this process holds, every ``lease_ttl_s / 3``
(two renewals may fail -- a Redis blip, a GC pause -- before a lease lapses). One thread per
process rather than one per run: starting and joining a thread per run cost a tenth of the
worker's per-run overhead (bench/dispatch_bench.py), and a threads-pool worker would otherwise
run one heartbeat thread per slot.

Each renewal answers with the run's state: CANCEL -> request CANCEL on the run's token (it
stops at its next step boundary; the executor deletes the checkpoint); LOST -> a newer epoch
owns the run (or it ended): request LOST_OWNERSHIP so this attempt writes nothing more. When no
renewal has succeeded for a whole lease TTL the lease may have been taken by now, and the
attempt stops the same way rather than keep doing work its fenced writes would reject anyway.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

from executus_worker.checkpoint.store import RenewStatus, RunStore
from executus_worker.core.stop import StopReason, StopToken

log = logging.getLogger(__name__)


class Lease:
    """One claimed attempt's lease: renewal and what its answer means for the run."""

    def __init__(
        self,
        store: RunStore,
        *,
        run_id: str,
        owner: str,
        epoch: int,
        lease_ttl_s: float,
        stop: StopToken,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self._store = store
        self._owner = owner
        self._epoch = epoch
        self._lease_ttl_s = lease_ttl_s
        self._stop = stop
        self._monotonic = monotonic
        self._last_ok = monotonic()
        self.lost = False

    def beat(self) -> RenewStatus | None:
        """One renewal and its consequence; None if the store could not be reached."""
        try:
            status = self._store.renew(
                self.run_id, owner=self._owner, epoch=self._epoch, lease_ttl_s=self._lease_ttl_s
            )
        except Exception as exc:  # any store/Redis failure: retried on the next tick
            silent_s = self._monotonic() - self._last_ok
            log.warning(
                "run %s: lease renewal failed (%s), %.1fs since the last",
                self.run_id,
                exc,
                silent_s,
            )
            if silent_s >= self._lease_ttl_s:
                self._stop.request(
                    StopReason.LOST_OWNERSHIP, f"lease not renewed for {silent_s:.1f}s"
                )
            return None
        self._last_ok = self._monotonic()
        if status is RenewStatus.CANCEL:
            self._stop.request(StopReason.CANCEL, "cancel requested")
        elif status is RenewStatus.LOST:
            self.lost = True  # nothing left to renew; the run is stopping
            self._stop.request(StopReason.LOST_OWNERSHIP, f"lease of epoch {self._epoch} lost")
        return status


class Heartbeats:
    """The per-process renewal thread and the leases it keeps alive."""

    def __init__(self, *, interval_s: float) -> None:
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}
        self._pid: int | None = None
        self._wake = threading.Event()

    def hold(self, lease: Lease) -> _Held:
        """Keep ``lease`` renewed for the duration of a ``with`` block."""
        return _Held(self, lease)

    def tick(self) -> None:
        """Renew every held lease once (the thread's body; tests call it directly)."""
        with self._lock:
            leases = list(self._leases.items())
        for key, lease in leases:
            lease.beat()
            if lease.lost:
                self._release(key)

    def _add(self, lease: Lease) -> int:
        key = id(lease)
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
        while True:
            self._wake.wait(self._interval_s)
            try:
                self.tick()
            except Exception:  # never let one bad renewal end renewals for every run
                log.exception("heartbeat tick failed")


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
