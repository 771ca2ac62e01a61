"""Audit batteries: where run events go. The default (``NullAudit`` in core.ports) drops them."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

from pydantic import JsonValue

from executus_worker.core.models import RunInfo

_log = logging.getLogger("executus.audit")


class LoggingAudit:
    """One JSON log line per event on the ``executus.audit`` logger (ship it with your logs).

    Only ids and the event's own data are logged -- never the run input, which may hold secrets.
    """

    def __init__(self, logger: logging.Logger = _log, level: int = logging.INFO) -> None:
        self._logger = logger
        self._level = level

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        line = {"event": event, "run_id": run.run_id, "agent": run.agent, "epoch": run.epoch}
        line.update(data)
        self._logger.log(self._level, json.dumps(line, default=str, separators=(",", ":")))


@dataclass
class MemoryAudit:
    """Keeps events in memory: for tests and the demo."""

    events: list[tuple[str, str, dict[str, JsonValue]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        with self._lock:
            self.events.append((run.run_id, event, dict(data)))
