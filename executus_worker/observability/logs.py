"""Log lines about a run carry its run id, step, epoch and worker, as text or as JSON.

The run handler's wrappers (``instruments.py``) set a context variable while a delivery is
handled and a run executes; ``RunContextFilter`` copies it onto every record logged in that
context, whatever logger the line comes from (ours, Celery's, an agent's). A context variable,
not a thread-local: a threads-pool worker runs one task per thread and each thread sees only
its own run. Lines logged by other threads (the heartbeat thread) can pass the same fields
with ``extra={"run_id": ..., "epoch": ...}``.

``EXECUTUS_LOG_FORMAT=json`` turns every handler Celery set up into one JSON object per line
(tracebacks included, escaped), for log shippers; the default keeps Celery's text format and
appends the run fields.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

# What a line about a run carries, in this order.
RUN_FIELDS = ("run_id", "step", "epoch", "attempt", "agent")


@dataclass(frozen=True)
class RunFields:
    run_id: str
    epoch: int | None = None
    attempt: int | None = None
    agent: str | None = None
    step: int | None = None


_current: contextvars.ContextVar[RunFields | None] = contextvars.ContextVar(
    "executus_run", default=None
)


@contextlib.contextmanager
def run_context(
    run_id: str | None,
    *,
    epoch: int | None = None,
    attempt: int | None = None,
    agent: str | None = None,
) -> Iterator[None]:
    """Lines logged inside carry these fields (a ``None`` run id sets nothing)."""
    if run_id is None:
        yield
        return
    token = _current.set(RunFields(run_id, epoch=epoch, attempt=attempt, agent=agent))
    try:
        yield
    finally:
        _current.reset(token)


def bind(run_id: str | None) -> contextvars.Token[RunFields | None] | None:
    """Like ``run_context`` for a span that a callback pair opens and closes (Celery's
    task_prerun / task_postrun); ``unbind`` the token in the same thread."""
    return None if run_id is None else _current.set(RunFields(run_id))


def unbind(token: contextvars.Token[RunFields | None]) -> None:
    _current.reset(token)


def set_step(step: int) -> None:
    """The step now running, for the rest of the current run context."""
    fields = _current.get()
    if fields is not None:
        _current.set(replace(fields, step=step))


def current() -> RunFields | None:
    return _current.get()


def worker_id() -> str:
    # The same "host:pid" as a lease's owner: a log line and a run record name one process.
    return f"{socket.gethostname()}:{os.getpid()}"


class RunContextFilter(logging.Filter):
    """Adds ``worker`` and, inside a run context, the run fields to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = worker_id()
        fields = _current.get()
        if fields is not None:
            for name in RUN_FIELDS:
                # A field passed explicitly (``extra=``) wins over the context.
                if getattr(record, name, None) is None:
                    setattr(record, name, getattr(fields, name))
        elif getattr(record, "run_id", None) is None:
            record.run_id = _celery_task_line_run(record)
        return True


def _celery_task_line_run(record: logging.LogRecord) -> str | None:
    """The run a line of Celery's own about a delivery names, outside any run context
    ("Task executus.run[...] received", in the MainProcess): Celery passes the line's context
    as ``extra={"data": {..., "args": request.argsrepr}}``, and a run's delivery shows its
    arguments as a string that also carries the run id (``worker.delivery.ShownArgs``)."""
    data = getattr(record, "data", None)
    shown = data.get("args") if isinstance(data, dict) else None
    run_id = getattr(shown, "run_id", None)
    return run_id if isinstance(run_id, str) else None


def run_suffix(record: logging.LogRecord) -> str:
    """`` [run=… step=… epoch=…]`` for a record about a run, else empty."""
    if getattr(record, "run_id", None) is None:
        return ""
    parts = [
        f"{'run' if name == 'run_id' else name}={value}"
        for name in RUN_FIELDS
        if (value := getattr(record, name, None)) is not None
    ]
    return f" [{' '.join(parts)}]"


class TextFormatter(logging.Formatter):
    """Wraps the formatter Celery configured (format, colours) and appends the run fields."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        suffix = run_suffix(record)
        if not suffix:
            return text
        # After the message's first line, before any traceback that follows it.
        head, sep, rest = text.partition("\n")
        return f"{head}{suffix}{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, worker, process, run fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "worker": getattr(record, "worker", None) or worker_id(),
            "process": record.processName,
        }
        for name in (*RUN_FIELDS, "task_id", "task_name"):
            value = getattr(record, name, None)
            # Celery's task formatter fills absent task ids with "???": no information.
            if value is not None and value != "???":
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of ``logger`` the run filter and the chosen format (idempotent)."""
    for handler in logger.handlers:
        if not any(isinstance(f, RunContextFilter) for f in handler.filters):
            # On the handler, not the logger: records from child loggers propagate to the
            # root's handlers without passing the root logger's own filters.
            handler.addFilter(RunContextFilter())
        current_formatter = handler.formatter
        if log_format == "json":
            if not isinstance(current_formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter())
        elif not isinstance(current_formatter, TextFormatter):
            handler.setFormatter(TextFormatter(current_formatter))
