"""Watching runs move: ``runs --watch`` (the live table) and ``enqueue --wait`` (one run).

Both poll ``Client.progress`` -- the small keys only, one round trip -- and never hold a
connection open between polls, so they work against any Redis the CLI can reach.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import click
from rich.console import Console

from executus_worker.cli.live import EventTracker, display_for
from executus_worker.client import Client, RunProgress, WaitTimeout
from executus_worker.client.progress import with_final_steps
from executus_worker.core.models import RunRecord, RunStatus

QUEUED_HINT_S = 5.0  # a run nobody claimed by then probably has no worker serving its queue
WAIT_POLL_S = 0.2


def watch_runs(
    client: Client,
    *,
    status: str | None,
    limit: int,
    interval_s: float,
    until_done: bool,
    stop: threading.Event,
) -> None:
    """Redraw the runs table every ``interval_s`` until ``stop`` (or, with ``until_done``,
    until every run shown has ended)."""
    finished: dict[str, int] = {}
    title = f"executus runs ({status or 'all'}, newest {limit}) -- Ctrl-C to stop"
    with display_for(sys.stdout, title=title) as display:
        while not stop.is_set():
            ids = [r.run_id for r in client.runs(status=status, limit=limit)]
            runs = with_final_steps(client.progress(ids), finished, client.transcript)
            display.show(runs)
            if until_done and all(_ended(r) for r in runs):
                return
            stop.wait(interval_s)


def _ended(run: RunProgress) -> bool:
    return run.record is None or run.record.status.terminal


def describe(run: RunProgress, tracker: EventTracker) -> str:
    """``running, step 3, phase work, owner host:pid (epoch 2, attempt 2), lease 28.1s``."""
    record = run.record
    if record is None:
        return f"unreadable: {run.problem}"
    parts = [record.status.value]
    if run.iteration is not None:
        parts.append(f"step {run.iteration}")
    if run.phase:
        parts.append(f"phase {run.phase}")
    if record.owner and not record.status.terminal:
        parts.append(
            f"owner {tracker.label(record.owner)} (epoch {record.epoch}, attempt {record.attempts})"
        )
    if run.lease_left_s is not None:
        parts.append(f"lease {run.lease_left_s:.1f}s")
    return ", ".join(parts)


def wait_showing_progress(client: Client, run_id: str, timeout_s: float) -> RunRecord:
    """``Client.wait``, saying on stderr where the run is while it waits: one line redrawn on
    a terminal, one line per change elsewhere. Raises ``WaitTimeout`` like ``Client.wait``."""
    console = Console(stderr=True)
    tracker = EventTracker()
    started = time.monotonic()
    hinted = False
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(console.status(run_id)) if console.is_terminal else None
        while True:
            run = _one(client, run_id)
            record = run.record
            assert record is not None  # _one raises for an unreadable record
            if record.status.terminal:
                return record
            elapsed = time.monotonic() - started
            if live is not None:
                live.update(f"{run_id}: {describe(run, tracker)}")
            else:
                for event in tracker.observe([run]):
                    click.echo(event, err=True)
            if record.status is RunStatus.QUEUED and elapsed > QUEUED_HINT_S and not hinted:
                hinted = True
                console.print(queued_hint(run_id, elapsed, record.queue), highlight=False)
            if elapsed >= timeout_s:
                raise WaitTimeout(run_id, timeout_s, record)
            time.sleep(min(WAIT_POLL_S, max(0.0, timeout_s - elapsed)))


def _one(client: Client, run_id: str) -> RunProgress:
    found = client.progress([run_id])
    if not found:
        client.status(run_id)  # RunNotFoundError, the message every command uses
    if not found or found[0].record is None:
        problem = found[0].problem if found else "record vanished"
        raise click.ClickException(f"run {run_id}: {problem}")
    return found[0]


def queued_hint(run_id: str, waited_s: float, queue: str) -> str:
    return (
        f"run {run_id} still queued after {waited_s:.0f} s: is a worker running on queue "
        f"{queue!r}? (executus-worker worker)"
    )
