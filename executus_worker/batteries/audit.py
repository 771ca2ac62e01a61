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
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Audit, AuditEvent

_log = logging.getLogger("executus.audit")
log = logging.getLogger(__name__)

# Written with the next event rather than alone: each is followed within the same attempt by a
# step or by the attempt's ending, so they cost no round trip of their own.
DEFERRED = frozenset({"claimed", "recovered", "started", "resumed"})
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

    Some events wait in memory and go out in the round trip of the run's next one: an
    attempt's ``claimed``/``recovered``/``started``/``resumed`` (a step, a critic decision or
    its ending comes next), and a single-loop run's final step (``done``: its ending follows
    at once). So a step costs one round trip, and a one-step run two fewer than its events. A
    failed write is logged and its events dropped: the audit trail never fails a run.
    """

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()  # a threads-pool worker records from several runs
        self._deferred: list[AuditEvent] = []

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        payload = bounded(data)
        if run.epoch > 0:
            payload.setdefault("epoch", run.epoch)
        item = AuditEvent(run.run_id, event, time.time(), payload)
        with self._lock:
            self._deferred.append(item)
            if event in DEFERRED or _final_step(event, payload):
                return
            batch, self._deferred = self._deferred, []
        try:
            self._sink.append_many(batch)
        except Exception as exc:
            log.warning("run %s: %d events not written: %s", run.run_id, len(batch), exc)

    def flush(self) -> None:
        """Write whatever waits (process shutdown)."""
        with self._lock:
            batch, self._deferred = self._deferred, []
        if batch:
            try:
                self._sink.append_many(batch)
            except Exception as exc:
                log.warning("%d run events not written at shutdown: %s", len(batch), exc)


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


def _final_step(event: str, data: dict[str, JsonValue]) -> bool:
    # A phase's last step is followed by the next phase's first model call, not an ending.
    return event == "step" and data.get("done") is True and data.get("phase") is None


def bounded(data: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """A copy with every string value cut to ``MAX_VALUE_CHARS`` (the tail kept: for a
    traceback, the frames nearest the failure)."""
    return {
        key: "..." + value[-(MAX_VALUE_CHARS - 3) :]
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS
        else value
        for key, value in data.items()
    }
