"""The live view: events read off successive snapshots, the table, terminal vs plain output."""

from __future__ import annotations

import io

from rich.console import Console

from executus_worker.cli.live import EventTracker, LiveDisplay, display_for, runs_table
from executus_worker.client import RunProgress
from executus_worker.core.models import RunRecord, RunRequest, RunStatus


def progress(
    status: RunStatus, *, epoch: int = 0, owner: str | None = None, step: int | None = None,
    phase: str | None = None, done: tuple[str, ...] = (), lease: float | None = None,
    output: str | None = None, error: str | None = None,
) -> RunProgress:  # fmt: skip
    record = RunRecord(
        run_id="r1", status=status, agent="demo.phased", request=RunRequest(agent="demo.phased"),
        queue="executus", attempts=epoch, epoch=epoch, owner=owner, output=output, error=error,
    )  # fmt: skip
    return RunProgress("r1", record, step, phase, done, lease)


def test_a_run_seen_from_queued_to_completed_through_a_crash() -> None:
    tracker = EventTracker(label=lambda owner: f"<{owner}>")
    snapshots = [
        progress(RunStatus.QUEUED),
        progress(RunStatus.RUNNING, epoch=1, owner="h:1", step=1, phase="plan", lease=2.5),
        progress(RunStatus.RUNNING, epoch=1, owner="h:1", step=3, phase="work", done=("plan",),
                 lease=2.0),
        progress(RunStatus.RUNNING, epoch=1, owner="h:1", step=3, phase="work", done=("plan",)),
        progress(RunStatus.QUEUED, epoch=1, owner="h:1", step=3, phase="work", done=("plan",)),
        progress(RunStatus.RUNNING, epoch=2, owner="h:2", step=3, phase="work", done=("plan",),
                 lease=3.0),
        progress(RunStatus.COMPLETED, epoch=2, output="done"),
    ]  # fmt: skip
    events = [event for snapshot in snapshots for event in tracker.observe([snapshot])]
    assert events == [
        "r1 queued (demo.phased)",
        "r1 claimed by <h:1> (epoch 1, attempt 1)",
        "r1 phase plan",
        "r1 phase work, done: plan",
        "r1 lease expired at step 3: <h:1> is gone",
        "r1 queued again for recovery",
        "r1 claimed by <h:2> (epoch 2, attempt 2)",
        "r1 completed: 'done'",
    ]
    assert tracker.last_step("r1") == 3  # kept after the checkpoint is gone


def test_interrupted_failed_and_unreadable_runs_are_named() -> None:
    tracker = EventTracker()
    tracker.observe([progress(RunStatus.RUNNING, epoch=1, owner="h:1", step=2, lease=1.0)])
    assert tracker.observe([progress(RunStatus.INTERRUPTED, epoch=1, step=2)]) == [
        "r1 interrupted at step 2, checkpoint kept"
    ]
    assert tracker.observe([progress(RunStatus.FAILED, epoch=1, error="boom")]) == [
        "r1 failed: boom"
    ]
    broken = RunProgress("r2", None, problem="unreadable run record at k: bad")
    assert tracker.observe([broken]) == ["r2 unreadable: unreadable run record at k: bad"]
    assert tracker.observe([broken]) == []  # said once


def test_the_table_has_a_row_per_run_with_step_phase_owner_and_lease() -> None:
    console = Console(record=True, width=160)
    tracker = EventTracker(label=lambda owner: "A (prefork)")
    row = progress(RunStatus.RUNNING, epoch=2, owner="h:1", step=7, phase="work", lease=2.25)
    console.print(runs_table([row], tracker))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "RUN" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "RUN", "AGENT", "STATUS", "STEP", "PHASE", "OWNER", "EPOCH", "ATT", "LEASE"
    ]  # fmt: skip
    cells = [c.strip() for c in text.splitlines()[3].split("│")[1:-1]]
    assert cells == ["r1", "demo.phased", "running", "7", "work", "A (prefork)", "2", "2", "2.2s"]


def test_on_a_terminal_the_table_is_redrawn_and_events_listed_under_it() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    with LiveDisplay(console, title="demo") as display:
        display.show([progress(RunStatus.QUEUED)])
        display.note("SIGTERM -> A")
        display.show([progress(RunStatus.RUNNING, epoch=1, owner="h:1", step=1, lease=3.0)])
    text = out.getvalue()
    assert "\x1b[" in text  # drawn with terminal control codes
    assert "SIGTERM -> A" in text
    assert "r1 claimed by h:1 (epoch 1, attempt 1)" in text


def test_without_a_terminal_each_event_is_one_plain_line() -> None:
    out = io.StringIO()
    with display_for(out) as display:
        display.show([progress(RunStatus.QUEUED)])
        display.note("SIGKILL -> B")
        display.say("summary")
    lines = out.getvalue().splitlines()
    assert [line.split(maxsplit=1)[1] for line in lines[:2]] == [
        "r1 queued (demo.phased)",
        "** SIGKILL -> B",
    ]
    assert lines[2] == "summary"
    assert "\x1b[" not in out.getvalue()


def test_owners_are_shown_as_host_and_pid() -> None:
    tracker = EventTracker()
    tracker.observe([progress(RunStatus.QUEUED)])
    owner = "vm:4242:0a1b2c3d.4026531836.987654"
    events = tracker.observe([progress(RunStatus.RUNNING, epoch=1, owner=owner, lease=1.0)])
    assert events == ["r1 claimed by vm:4242 (epoch 1, attempt 1)"]
