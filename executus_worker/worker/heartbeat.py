"""The per-run heartbeat: renews the lease and carries the durable cancel flag to the run.

A daemon thread next to the running task renews every ``lease_ttl_s / 3``, so two renewals can
fail (a Redis blip, a GC pause) before the lease lapses. Each renewal answers with the run's
state: CANCEL -> request CANCEL on the run's token (it stops at its next step boundary, the
executor deletes the checkpoint); LOST -> a newer epoch owns the run (or it ended), request
LOST_OWNERSHIP so this attempt writes nothing more. When no renewal has succeeded for a whole
lease TTL, the lease may have been taken by now; the attempt stops the same way rather than
keep doing work that its fenced writes would reject anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from executus_worker.checkpoint.store import RenewStatus, RunStore
from executus_worker.core.stop import StopReason, StopToken

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        store: RunStore,
        *,
        run_id: str,
        owner: str,
        epoch: int,
        lease_ttl_s: float,
        stop: StopToken,
        interval_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._owner = owner
        self._epoch = epoch
        self._lease_ttl_s = lease_ttl_s
        self._stop = stop
        self._interval_s = interval_s if interval_s is not None else lease_ttl_s / 3
        self._monotonic = monotonic
        self._last_ok = monotonic()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._last_ok = self._monotonic()
        self._thread = threading.Thread(
            target=self._loop, name=f"executus-heartbeat-{self._run_id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the run is over: the executor already released or finished)."""
        self._done.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # A renewal in flight is one Redis round trip; don't hang the task on a dead Redis.
            thread.join(timeout=max(1.0, self._interval_s))

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def beat(self) -> RenewStatus | None:
        """One renewal and its consequence; None if Redis could not be reached.

        Called by the thread; tests call it directly instead of sleeping.
        """
        try:
            status = self._store.renew(
                self._run_id, owner=self._owner, epoch=self._epoch, lease_ttl_s=self._lease_ttl_s
            )
        except Exception as exc:  # any store/Redis failure: retry next tick, see below
            silent_s = self._monotonic() - self._last_ok
            log.warning(
                "run %s: lease renewal failed (%s), %.1fs since the last",
                self._run_id,
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
            self._stop.request(StopReason.LOST_OWNERSHIP, f"lease of epoch {self._epoch} lost")
        return status

    def _loop(self) -> None:
        while not self._done.wait(self._interval_s):
            status = self.beat()
            if status is RenewStatus.LOST:
                return  # nothing left to renew; the run is stopping
