"""Recovery: find interrupted and orphaned runs, move them back to ``queued``, re-publish them.

It re-enqueues and never runs anything inline: the run claims itself when its message arrives,
so a duplicate (two sweeps, a broker redelivery) is harmless -- the claim drops it.

Every worker runs the sweep in a MainProcess daemon thread, once at boot (``worker_ready``) and
then every ``sweep_interval_s`` until shutdown. Not as a Celery task: a recover task queues
behind long runs that hold every pool slot and can be starved for a whole run
(shared/research/celery-shutdown.md §6, measured 16 s late). The ``executus.recover`` task
exists for operators and beat, and calls the same ``Recovery.sweep``.

A sweep costs what it finds: the store keeps every non-terminal run in a recovery index scored
by when it becomes a candidate (a lease deadline pushed forward by every renewal, an interrupt,
a queued run's timeout with backoff; see ``checkpoint/store.py``), so a sweep reads only the due
runs, in batches, and a sweep that finds nothing is two index reads however many runs are
healthy. Each batch is published as soon as it is moved back to ``queued``. One short index
audit per sweep keeps the index honest (and indexes data an older version wrote).

Queued runs are re-published only when their message is plausibly lost: after
``queued_timeout_s``, with exponential backoff, and not while their broker queue holds a backlog
they may be waiting in (one LLEN per queue per sweep; the rule and its limit are in
``checkpoint/store.py``).

Two layers stop a herd of booting workers from doing the work N times: a short scan lock
(SET NX PX, released by compare-and-delete on a random token, so a sweep that outlived its
lock never deletes the next holder's), and the store's per-run compare-and-set, which moves a
run back to ``queued`` only once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from executus_worker.checkpoint.store import Requeued, RunStore
from executus_worker.core.models import RunStatus
from executus_worker.observability import Metrics, NullMetrics
from executus_worker.publish import RunMessage
from executus_worker.redis_connect import StateClient
from executus_worker.worker.shutdown import DrainToken
from executus_worker.worker.takeover import release_dead_owners

log = logging.getLogger(__name__)

_RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Why a run needed recovering, from the status the sweep found it in (metrics label).
RECOVERY_REASONS = {
    RunStatus.INTERRUPTED: "interrupted",  # warm shutdown left it for another worker
    RunStatus.RUNNING: "lease_expired",  # its owner died or was cut off
    RunStatus.QUEUED: "queued_timeout",  # its message was lost before any claim
}


class Publisher(Protocol):
    def publish_many(self, messages: Iterable[RunMessage]) -> int: ...

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in the broker queue (LLEN): a backlog a queued run may sit in."""
        ...


class ScanLock:
    """A best-effort mutual exclusion for sweeps; correctness never depends on it."""

    def __init__(self, client: StateClient, key: str, *, ttl_ms: int = 30_000) -> None:
        self._client = client
        self._key = key
        self._ttl_ms = ttl_ms
        self._release = client.register_script(_RELEASE_IF_OWNER)

    def acquire(self, token: str) -> bool:
        return bool(self._client.set(self._key, token, nx=True, px=self._ttl_ms))

    def release(self, token: str) -> bool:
        return bool(self._release(keys=[self._key], args=[token]))


@dataclass
class SweepReport:
    skipped_locked: bool = False
    scanned: int = 0
    requeued: int = 0
    published: int = 0
    publish_failed: int = 0
    deferred: int = 0  # queued runs not re-published: their queue has a backlog
    audited: int = 0  # active runs whose index entry the audit checked
    reindexed: int = 0  # of those, runs that had none (now indexed as due)
    errors: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    store_s: float = 0.0  # of elapsed_s: the store's sweep (index reads + per-run CAS)
    publish_s: float = 0.0  # building and pushing the messages (overlaps store_s when batched)

    def as_dict(self) -> dict[str, object]:
        return {
            "skipped_locked": self.skipped_locked,
            "scanned": self.scanned,
            "requeued": self.requeued,
            "published": self.published,
            "publish_failed": self.publish_failed,
            "deferred": self.deferred,
            "reindexed": self.reindexed,
            "errors": len(self.errors),
            "elapsed_s": round(self.elapsed_s, 4),
        }


class Recovery:
    def __init__(
        self,
        store: RunStore,
        publisher: Publisher,
        *,
        queued_timeout_s: float,
        lock: ScanLock | None = None,
        batch: int = 1000,
        audit_limit: int = 500,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or NullMetrics()
        self._publisher = publisher
        self._queued_timeout_s = queued_timeout_s
        self._lock = lock
        # Up to 2 x batch per-run scripts go out in one pipelined round trip.
        self._batch = batch
        self._audit_limit = audit_limit
        self._clock = clock

    @property
    def store(self) -> RunStore:
        return self._store

    def sweep(self) -> SweepReport:
        """Requeue and re-publish every due run once; see the module docstring."""
        started = time.perf_counter()
        token = uuid.uuid4().hex
        if self._lock is not None and not self._lock.acquire(token):
            # Another worker is sweeping right now, and its sweep covers every run.
            return SweepReport(skipped_locked=True)
        report = SweepReport()
        try:
            self._walk(report)
        finally:
            if self._lock is not None:
                self._lock.release(token)
            report.elapsed_s = time.perf_counter() - started
        if report.requeued or report.errors or report.publish_failed or report.deferred:
            log.info("recovery sweep: %s", report.as_dict())
        return report

    def _walk(self, report: SweepReport) -> None:
        # One `now` for the whole sweep: every run the store looks at leaves the due range for
        # this `now`, so each due run is visited once, and the batches end.
        now = self._clock()
        started = time.perf_counter()
        audit = self._store.audit_index(now=now, limit=self._audit_limit)
        report.audited, report.reindexed = audit.checked, audit.added
        if audit.added:
            log.warning(
                "recovery: %d active runs were missing from the recovery index (written by an "
                "older version, or index writes lost); indexed them as due now",
                audit.added,
            )
        report.store_s += time.perf_counter() - started
        backlogged = _BacklogProbe(self._publisher)
        pool: ThreadPoolExecutor | None = None
        pending: deque[Future[None]] = deque()
        try:
            while True:
                started = time.perf_counter()
                batch = self._store.sweep(
                    now=now,
                    queued_timeout_s=self._queued_timeout_s,
                    batch=self._batch,
                    backlogged=backlogged,
                )
                report.store_s += time.perf_counter() - started
                report.scanned += batch.scanned
                report.deferred += batch.deferred
                for run_id, what in batch.errors:
                    # One bad record must not stop the others: report it and go on.
                    log.error("recovery: skipped run %s: %s", run_id, what)
                report.errors.extend(batch.errors)
                report.requeued += len(batch.requeued)
                self._count(batch.requeued)
                if pool is None and not batch.more:
                    self._publish(batch.requeued, report)  # the only batch: no thread
                    return
                if pool is None:
                    # More batches: each is published by one helper thread while Redis runs the
                    # next batch's scripts (the sweep thread waits on the socket meanwhile), so
                    # client and server work overlap. At most two batches wait for it.
                    pool = ThreadPoolExecutor(1, thread_name_prefix="executus-publish")
                pending.append(pool.submit(self._publish, batch.requeued, report))
                while len(pending) > 2:
                    pending.popleft().result()
                if not batch.more:
                    return
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    def _count(self, requeued: Sequence[Requeued]) -> None:
        reasons = Counter(
            RECOVERY_REASONS.get(r.previous_status, r.previous_status.value) for r in requeued
        )
        for reason, count in reasons.items():
            self._metrics.recovered(reason, count)

    def _publish(self, requeued: Sequence[Requeued], report: SweepReport) -> None:
        """Publish one batch; a failure is counted and logged, never raised. Only one thread
        at a time runs this for a report (the sweep thread, or the one helper thread)."""
        if not requeued:
            return
        started = time.perf_counter()
        messages = [RunMessage(r.run_id, r.request_json, r.queue) for r in requeued]
        try:
            report.published += self._publisher.publish_many(messages)
        except Exception:
            # The runs are `queued` without a message now; the queued-timeout path of a later
            # sweep re-publishes them. Say so loudly: that is queued_timeout_s of delay.
            report.publish_failed += len(messages)
            log.exception(
                "recovery: publishing %d requeued runs failed; a later sweep retries them "
                "after the queued timeout",
                len(messages),
            )
        finally:
            report.publish_s += time.perf_counter() - started


class _BacklogProbe:
    """Does a broker queue hold messages? Asked once per queue per sweep (one LLEN)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._answers: dict[str, bool] = {}

    def __call__(self, queue: str) -> bool:
        if queue not in self._answers:
            try:
                self._answers[queue] = self._publisher.queue_depth(queue) > 0
            except Exception:
                # Unknown counts as no backlog: a duplicate is harmless (the claim drops it),
                # a run left without a message is not.
                log.warning("recovery: cannot read the depth of queue %r", queue, exc_info=True)
                self._answers[queue] = False
        return self._answers[queue]


class RecoveryLoop:
    """The MainProcess daemon thread: a boot sweep, then one every ``interval_s`` until drain."""

    def __init__(
        self,
        recovery: Callable[[], Recovery],
        *,
        interval_s: float,
        drain: DrainToken,
        jitter: float = 0.1,
    ) -> None:
        self._recovery_factory = recovery
        self._interval_s = interval_s
        self._drain = drain
        self._jitter = jitter
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="executus-recovery", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        recovery: Recovery | None = None
        booted = False
        while not self._drain.requested():
            try:
                recovery = recovery or self._recovery_factory()
                if not booted:
                    # Before the boot sweep: runs of provably dead local owners (this worker's
                    # previous incarnation) are recovered now, not after their leases expire.
                    release_dead_owners(recovery.store)
                    booted = True
                recovery.sweep()
            except Exception:
                log.exception("recovery sweep failed; retrying in %.1fs", self._interval_s)
            # Jitter de-synchronises workers that booted together, so their sweeps rarely
            # even meet the lock.
            spread = self._interval_s * self._jitter
            if self._drain.wait(self._interval_s + random.uniform(-spread, spread)):
                return
