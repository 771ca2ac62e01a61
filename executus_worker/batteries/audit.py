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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Audit

_log = logging.getLogger("executus.audit")
log = logging.getLogger(__name__)

# An attempt is over after one of these: the events written so far are flushed before the
# task returns, so a process exiting next (warm shutdown) does not take them along.
ENDINGS = frozenset({"completed", "failed", "cancelled", "interrupted", "lost", "dead"})
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
    """Where StreamAudit writes: ``checkpoint.events.RedisEventLog`` or ``BufferedEventLog``."""

    def append(
        self, run_id: str, event: str, data: dict[str, JsonValue], ts: float | None = None
    ) -> None: ...

    def flush(self, timeout_s: float = 2.0) -> bool: ...


class StreamAudit:
    """Every event to its run's bounded event stream, with the attempt's epoch."""

    def __init__(self, sink: EventSink, *, flush_timeout_s: float = 2.0) -> None:
        self._sink = sink
        self._flush_timeout_s = flush_timeout_s

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        payload = bounded(data)
        if run.epoch > 0:
            payload.setdefault("epoch", run.epoch)
        self._sink.append(run.run_id, event, payload)
        if event in ENDINGS:
            self._sink.flush(self._flush_timeout_s)


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
