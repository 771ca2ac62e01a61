"""The live run table (``demo``, ``runs --watch``) and the events read off its changes.

Events are what changed between two polls of ``Client.progress`` -- a claim (new epoch), a
phase, a status, a lease that vanished under a running run -- so they work against any Redis,
with nothing extra written per step. A change that starts and ends between two polls is seen
as its net effect (a claim and a completion in one poll show as the completion).

On a terminal the table is redrawn in place (rich); otherwise each event is one plain line,
which is what a log or a CI job wants.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from executus_worker.client.progress import RunProgress
from executus_worker.core.models import RunStatus

OwnerLabel = Callable[[str], str]
EVENTS_SHOWN = 14
STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "interrupted": "yellow",
    "completed": "green",
    "failed": "bold red",
    "dead": "bold red",
    "cancelled": "magenta",
}


def plain_owner(owner: str) -> str:
    """``host:pid``: an owner may add ``:<boot>.<pidns>.<start>`` (worker.identity), which
    proves a pid dead but only widens a table."""
    return ":".join(owner.split(":")[:2])


@dataclass
class _Seen:
    status: str
    epoch: int
    phase: str | None
    iteration: int | None
    leased: bool
    problem: str | None


@dataclass
class EventTracker:
    """Turns successive snapshots into event lines; remembers each run's last step."""

    label: OwnerLabel = plain_owner
    seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, runs: Sequence[RunProgress]) -> list[str]:
        events: list[str] = []
        for run in runs:
            now = self._state(run)
            before = self.seen.get(run.run_id)
            events += self._changes(run, before, now)
            if now.iteration is None and before is not None and run.record is not None:
                # The checkpoint is deleted when a run ends: keep showing how far it got.
                now.iteration = before.iteration
            self.seen[run.run_id] = now
        return events

    def last_step(self, run_id: str) -> int | None:
        seen = self.seen.get(run_id)
        return seen.iteration if seen else None

    def _state(self, run: RunProgress) -> _Seen:
        record = run.record
        return _Seen(
            status=record.status.value if record else "unreadable",
            epoch=record.epoch if record else 0,
            phase=run.phase,
            iteration=run.iteration,
            leased=run.lease_left_s is not None,
            problem=run.problem,
        )

    def _changes(self, run: RunProgress, before: _Seen | None, now: _Seen) -> list[str]:
        rid, record = run.run_id, run.record
        if record is None:
            if before is None or before.problem != now.problem:
                return [f"{rid} unreadable: {run.problem}"]
            return []
        events = []
        if before is None:
            events.append(f"{rid} {now.status} ({record.agent})")
        if record.epoch > (before.epoch if before else 0) and record.owner:  # a new claim
            events.append(
                f"{rid} claimed by {self.label(record.owner)} "
                f"(epoch {record.epoch}, attempt {record.attempts})"
            )
        if now.phase is not None and (before is None or before.phase != now.phase):
            done = f", done: {'/'.join(run.completed_phases)}" if run.completed_phases else ""
            events.append(f"{rid} phase {now.phase}{done}")
        if (
            before is not None
            and before.leased
            and not now.leased
            and now.status == RunStatus.RUNNING.value
        ):
            owner = self.label(record.owner) if record.owner else "its owner"
            at = f"at step {now.iteration}" if now.iteration else "before its first step"
            events.append(f"{rid} lease expired {at}: {owner} is gone")
        claimed = record.epoch > (before.epoch if before else 0)
        said_by_claim = claimed and record.status is RunStatus.RUNNING
        if before is not None and before.status != now.status and not said_by_claim:
            events.append(self._status_event(run, now))
        return events

    def _status_event(self, run: RunProgress, now: _Seen) -> str:
        record = run.record
        assert record is not None
        rid, status = run.run_id, record.status
        if status is RunStatus.INTERRUPTED:
            return f"{rid} interrupted at step {now.iteration}, checkpoint kept"
        if status is RunStatus.QUEUED:
            return f"{rid} queued again for recovery"
        if status is RunStatus.COMPLETED:
            return f"{rid} completed: {record.output!r}"
        if status in (RunStatus.FAILED, RunStatus.DEAD):
            return f"{rid} {status.value}: {record.error}"
        return f"{rid} {status.value}"


def _lease(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def runs_table(
    runs: Sequence[RunProgress], tracker: EventTracker, *, title: str | None = None
) -> Table:
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False)
    for column in ("RUN", "AGENT", "STATUS", "STEP", "PHASE", "OWNER", "EPOCH", "ATT", "LEASE"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        record = run.record
        if record is None:
            table.add_row(run.run_id, "?", Text("unreadable", "bold red"), *["-"] * 6)
            continue
        step = run.iteration if run.iteration is not None else tracker.last_step(run.run_id)
        owner = tracker.label(record.owner) if record.owner else "-"
        table.add_row(
            run.run_id,
            record.agent,
            Text(record.status.value, STATUS_STYLE.get(record.status.value, "")),
            "-" if step is None else str(step),
            run.phase or "-",
            owner if not record.status.terminal else Text(owner, "dim"),
            str(record.epoch),
            str(record.attempts),
            _lease(run.lease_left_s),
        )
    return table


class LiveDisplay:
    """The table redrawn in place, with the latest events under it (a terminal)."""

    def __init__(self, console: Console, *, label: OwnerLabel = plain_owner, title: str = ""):
        self.console = console
        self.tracker = EventTracker(label)
        self.title = title
        self.started = time.monotonic()
        self.events: deque[Text] = deque(maxlen=EVENTS_SHOWN)
        self.runs: Sequence[RunProgress] = ()
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._redraw()
        self._live.stop()

    def show(self, runs: Sequence[RunProgress]) -> None:
        self.runs = runs
        for event in self.tracker.observe(runs):
            self._event(event, "")
        self._redraw()

    def note(self, text: str) -> None:
        self._event(text, "bold")
        self._redraw()

    def say(self, text: str = "") -> None:
        self.console.print(text, highlight=False)

    def _event(self, text: str, style: str) -> None:
        stamp = f"{time.monotonic() - self.started:6.1f}s  "
        self.events.append(Text(stamp, "dim") + Text(text, style))

    def _redraw(self) -> None:
        table = runs_table(self.runs, self.tracker, title=self.title or None)
        self._live.update(Group(table, Text(""), *self.events), refresh=True)


class PlainDisplay:
    """One line per event, nothing redrawn (a log file, a pipe, CI)."""

    def __init__(self, out: TextIO, *, label: OwnerLabel = plain_owner) -> None:
        self.out = out
        self.tracker = EventTracker(label)
        self.started = time.monotonic()

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()

    def show(self, runs: Sequence[RunProgress]) -> None:
        for event in self.tracker.observe(runs):
            self._line(event)

    def note(self, text: str) -> None:
        self._line(f"** {text}")

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def _line(self, text: str) -> None:
        print(f"{time.monotonic() - self.started:6.1f}s  {text}", file=self.out, flush=True)


Display = LiveDisplay | PlainDisplay


@contextmanager
def display_for(
    out: TextIO, *, label: OwnerLabel = plain_owner, title: str = "", live: bool | None = None
) -> Iterator[Display]:
    """A live table on a terminal, plain lines elsewhere (``live`` forces either)."""
    console = Console(file=out)
    use_live = console.is_terminal if live is None else live
    display: Display = (
        LiveDisplay(console, label=label, title=title)
        if use_live
        else PlainDisplay(out, label=label)
    )
    with display:
        yield display
