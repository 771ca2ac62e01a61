"""Reading a run's events for ``Client.events``: the stored ones, then (``follow``) new ones as
they come, until the run has ended.

A follow ends after a terminal event (completed, failed, cancelled, dead). Events are written
by a worker thread a moment after the record changes, so when the record turns terminal with no
terminal event yet, the follow waits ``grace_s`` more for it, then ends anyway (a run whose
events were switched off, or whose last event was lost with its process, must not hang it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from executus_worker.checkpoint.events import RedisEventLog, RunEvent
from executus_worker.checkpoint.store import RunStore
from executus_worker.errors import RunNotFoundError

TERMINAL_EVENTS = frozenset({"completed", "failed", "cancelled", "dead"})


def iter_events(
    log: RedisEventLog,
    store: RunStore,
    run_id: str,
    *,
    follow: bool,
    timeout_s: float | None = None,
    after: str = "0",
    block_s: float = 1.0,
    grace_s: float = 2.0,
) -> Iterator[RunEvent]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last, ended, seen = after, False, False
    for event in log.read_all(run_id, after=after):
        seen = True
        last = event.id
        ended = ended or event.event in TERMINAL_EVENTS
        yield event
    if not seen and store.get(run_id) is None:
        raise RunNotFoundError(run_id)
    terminal_since: float | None = None
    while follow and not ended:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return
        wait_s = block_s if deadline is None else min(block_s, deadline - now)
        batch = log.wait(run_id, after=last, block_ms=int(wait_s * 1000))
        for event in batch:
            last = event.id
            ended = ended or event.event in TERMINAL_EVENTS
            yield event
        if batch or ended:
            continue
        record = store.get(run_id)
        if record is None or record.status.terminal:
            terminal_since = terminal_since or time.monotonic()
            if time.monotonic() - terminal_since >= grace_s:
                return
