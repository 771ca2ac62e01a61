"""Audit batteries: where run events go. The default (``NullAudit`` in core.ports) drops them.

The events a run produces, and who records them:

    enqueued     client (or the worker that registers a raw message on first sight)
    claimed      worker: owner, epoch, attempt            cancelled / dead  worker at claim
    started      executor (a fresh run)                   resumed  executor: iteration reached
    step         executor: iteration, tokens, cost        critic   watchdog: nudge/extend/kill
    budget_stop  budget battery: what was spent, which limit
    completed / failed (error, bounded traceback) / cancelled / interrupted / lost   executor
    recovered    recovery sweep: reason (interrupted, lease_expired, queued_timeout)

``StreamAudit`` sends them to the run's Redis stream (``checkpoint.events``); ``LoggingAudit``
to the log; ``FanoutAudit`` to several sinks, each one's failure contained.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Audit, AuditEvent

_log = logging.getLogger("executus.audit")
log = logging.getLogger(__name__)

MAX_VALUE_CHARS = 4096  # a traceback is bounded to this already; nothing else may be longer


class LoggingAudit:
    """One JSON log line per event on the ``executus.audit`` logger (ship it with your logs).

    Only ids and the event's own data are logged -- never the run input, which may hold secrets.
    """

    def __init__(self, logger: logging.Logger = _log, level: int = logging.INFO) -> None:
        self._logger = logger
        self._level = level

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        if not self._logger.isEnabledFor(self._level):
            return  # the worker logs these at DEBUG: skip the encoding when nobody reads it
        line = {"event": event, "run_id": run.run_id, "agent": run.agent, "epoch": run.epoch}
        line.update(bounded(data))
        self._logger.log(self._level, json.dumps(line, default=str, separators=(",", ":")))


class EventSink(Protocol):
    """Where StreamAudit writes: ``checkpoint.events.RedisEventLog`` (one pipeline a call)."""

    def append_many(self, events: Sequence[AuditEvent]) -> None: ...


class StreamAudit:
    """Every event to its run's bounded event stream, stamped with the attempt's epoch.

    Events are written by a background thread, never by the run: ``record`` only queues the
    event, and the writer sends whatever has gathered in one round trip (a pipeline of one
    script call per run). Writing them inline cost a round trip per step and one more per run,
    about a third of a no-op run's durable overhead (bench/dispatch_bench.py). The audit trail
    was already best effort -- a failed write is logged and its events dropped, it never fails
    a run -- and readers already allow for an event landing a moment after the record changed
    (``client.events``, the API's stream).

    Order is kept (one queue, one writer). The queue is bounded: while the store is down the
    oldest events give way, and the loss is logged. ``flush`` writes what waits and returns
    once it is written (process shutdown); after a fork the child starts its own writer and
    drops what it inherited (the parent writes those).
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        linger_s: float = 0.002,
        max_pending: int = 10_000,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._sink = sink
        self._linger_s = linger_s
        self._max_pending = max_pending
        self._cond = threading.Condition()  # a threads-pool worker records from several runs
        self._pending: deque[AuditEvent] = deque()
        self._writing = 0  # events taken by the writer and not yet written
        self._dropped = 0
        self._pid = os.getpid()
        self._writer: threading.Thread | None = None
        self._idle = False  # the writer waits for events (and must be woken)

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        payload = bounded(data)
        if run.epoch > 0:
            payload.setdefault("epoch", run.epoch)
        item = AuditEvent(run.run_id, event, time.time(), payload)
        with self._cond:
            self._ensure_writer()
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self._dropped += 1
            self._pending.append(item)
            if self._idle:  # wake the writer only when it sleeps: a futex call per event else
                self._cond.notify_all()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Write everything recorded so far; False if that did not finish within timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._ensure_writer()
            if self._writer is not None and not self._writer.is_alive():
                self._writer = None
                self._ensure_writer()
            self._cond.notify_all()
            while self._pending or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning(
                        "%d run events not written within %.1f s", len(self._pending), timeout_s
                    )
                    return False
                self._cond.wait(left)
        return True

    def _ensure_writer(self) -> None:
        # Under self._cond.
        if self._pid != os.getpid():
            # A forked child: the parent's writer thread is not here, and the parent writes
            # the events it had queued; writing them here too would duplicate them.
            self._pid = os.getpid()
            self._pending.clear()
            self._writing = 0
            self._writer = None
        # The writer never returns (it contains every error), so it is started once per
        # process; flush() also restarts one that an interpreter shutdown took away.
        if self._writer is None:
            self._writer = threading.Thread(
                target=self._write_forever, name="executus-audit-writer", daemon=True
            )
            self._writer.start()

    def _write_forever(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
            # Let the rest of a burst (a run's claim, start, step and ending come within a
            # millisecond or two) join this round trip.
            time.sleep(self._linger_s)
            with self._cond:
                batch = list(self._pending)
                self._pending.clear()
                self._writing = len(batch)
                dropped, self._dropped = self._dropped, 0
            if dropped:
                log.warning("%d run events dropped: the event store did not keep up", dropped)
            try:
                self._sink.append_many(batch)
            except Exception as exc:
                log.warning("%d run events not written: %s", len(batch), exc)
            finally:
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()


class FanoutAudit:
    """Records to each audit in turn; one failing never keeps the event from the others."""

    def __init__(self, audits: Sequence[Audit]) -> None:
        self._audits = list(audits)

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        for audit in self._audits:
            try:
                audit.record(run, event, data)
            except Exception:
                log.exception("audit %s failed for run %s (ignored)", audit, run.run_id)


@dataclass
class MemoryAudit:
    """Keeps events in memory: for tests and the demo."""

    events: list[tuple[str, str, dict[str, JsonValue]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        with self._lock:
            self.events.append((run.run_id, event, dict(data)))

    def names(self, run_id: str | None = None) -> list[str]:
        with self._lock:
            return [e for r, e, _ in self.events if run_id is None or r == run_id]


def bounded(data: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """A copy with every string value cut to ``MAX_VALUE_CHARS`` (the tail kept: for a
    traceback, the frames nearest the failure)."""
    return {
        key: "..." + value[-(MAX_VALUE_CHARS - 3) :]
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS
        else value
        for key, value in data.items()
    }
