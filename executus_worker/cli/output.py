"""How the CLI prints runs: short human text by default, one JSON document with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from executus_worker.client.progress import RunProgress
from executus_worker.core.models import Message, RunRecord, RunStatus


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


def record_document(record: RunRecord, messages: Sequence[Message] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = record.model_dump(mode="json")
    if messages is not None:
        document["transcript"] = [m.model_dump(mode="json") for m in messages]
    return document


def when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def record_text(record: RunRecord, progress: RunProgress | None = None) -> str:
    rows = [
        ("run", record.run_id),
        ("status", record.status.value + (" (cancel requested)" if _cancelling(record) else "")),
        ("agent", record.agent),
        ("queue", record.queue),
    ]
    if progress is not None:
        rows += _progress_rows(record, progress)
    rows += [
        ("epoch", str(record.epoch)),
        ("attempts", str(record.attempts)),
        ("created", when(record.created_at)),
        ("started", when(record.started_at)),
        ("finished", when(record.finished_at)),
    ]
    if record.output is not None:
        rows.append(("output", _compact(record.output)))
    if record.error:
        rows.append(("error", record.error))
    if record.needs_format and not record.status.terminal:
        waiting = f"for a worker that reads checkpoint format {record.needs_format}"
        rows.append(("waiting", f"{waiting} ({record.last_reason})"))
    width = max(len(name) for name, _ in rows)
    # A failed run's error carries its traceback on the following lines: keep them aligned.
    indent = "\n" + " " * (width + 2)
    return "\n".join(f"{name:<{width}}  " + value.replace("\n", indent) for name, value in rows)


def _progress_rows(record: RunRecord, progress: RunProgress) -> list[tuple[str, str]]:
    rows = [("step", "-" if progress.iteration is None else str(progress.iteration))]
    if progress.phase or progress.completed_phases:
        done = "/".join(progress.completed_phases) or "-"
        rows.append(("phase", f"{progress.phase or '-'} (done: {done})"))
    rows.append(("owner", record.owner or "-"))
    if progress.lease_left_s is not None:
        rows.append(("lease", f"{progress.lease_left_s:.1f}s left"))
    elif record.status is RunStatus.RUNNING:
        rows.append(("lease", "expired: the owner is gone; the sweep will re-queue the run"))
    if progress.problem:
        rows.append(("problem", progress.problem))
    return rows


def progress_document(progress: RunProgress) -> dict[str, Any]:
    return {
        "step": progress.iteration,
        "phase": progress.phase,
        "completed_phases": list(progress.completed_phases),
        "lease_left_s": progress.lease_left_s,
        "problem": progress.problem,
    }


def _cancelling(record: RunRecord) -> bool:
    return record.cancel_requested and not record.status.terminal


def transcript_text(messages: Sequence[Message]) -> str:
    if not messages:
        return "(empty transcript)"
    lines = []
    for message in messages:
        content = message.content
        if message.tool_calls:
            calls = ", ".join(f"{c.name}({_compact(c.arguments)})" for c in message.tool_calls)
            content = f"{content} -> {calls}".strip()
        lines.append(f"[{message.role}] {content}")
    return "\n".join(lines)


def runs_table(records: Sequence[RunRecord]) -> str:
    if not records:
        return "(no runs)"
    header = ("RUN", "STATUS", "AGENT", "QUEUE", "ATTEMPTS", "UPDATED")
    rows = [header] + [
        (r.run_id, r.status.value, r.agent, r.queue, str(r.attempts), when(r.updated_at))
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )
