"""Assertions the worker-level fault tests share: runs end exactly, workers keep consuming.

Every wait also watches the workers: a worker that died or gave up ("Unrecoverable error")
fails the test at once with its log, instead of a timeout that says nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from e2e.harness import Cluster, Worker, counter_transcript, wait_for

from executus_worker.core.models import RunStatus

TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DEAD)


def check_workers(workers: Sequence[Worker]) -> None:
    for worker in workers:
        text = worker.text()
        fatal = [line for line in text.splitlines() if "Unrecoverable error" in line]
        if fatal or not worker.alive():
            why = fatal[0] if fatal else f"exited with {worker.proc.returncode}"
            raise AssertionError(f"worker {worker.name} stopped consuming: {why}\n{text[-3000:]}")


def watched(workers: Sequence[Worker], check: Callable[[], Any]) -> Callable[[], Any]:
    def poll() -> Any:
        check_workers(workers)
        return check()

    return poll


def assert_completed_exactly(
    cluster: Cluster, runs: dict[str, int], workers: Sequence[Worker], timeout_s: float
) -> None:
    """Every run completed (none dead or failed) with the transcript ``step 1..step N``."""

    def ended() -> bool:
        records = [cluster.store.get(run_id) for run_id in runs]
        return all(r is not None and r.status in TERMINAL for r in records)

    wait_for(f"{len(runs)} runs to end", watched(workers, ended), timeout_s, every_s=0.1)
    for run_id, steps in runs.items():
        record = cluster.record(run_id)
        assert record.status is RunStatus.COMPLETED, (
            f"run {run_id} ended {record.status.value} after {record.attempts} attempts: "
            f"{record.error}"
        )
        assert cluster.transcript(run_id) == counter_transcript(steps), run_id
        assert cluster.keys_without_ttl(run_id) == [], run_id


def assert_keeps_consuming(cluster: Cluster, worker: Worker, runs: int = 2) -> None:
    """New runs enqueued now complete, executed by this worker's processes."""
    check_workers([worker])
    fresh = {cluster.submit("e2e.counter", steps=2, step_s=0.05): 2 for _ in range(runs)}
    assert_completed_exactly(cluster, fresh, [worker], timeout_s=30)
    ran = {e["pid"] for run_id in fresh for e in cluster.steps(run_id, "start")}
    assert ran <= worker.pids(), (ran, worker.name)
    check_workers([worker])


def wait_for_progress(
    cluster: Cluster, runs: list[str], workers: Sequence[Worker], since: float, timeout_s: float
) -> None:
    """Every run has finished a step after ``since`` (wall clock) or has ended."""

    def moved(run_id: str) -> bool:
        if any(e["t"] > since for e in cluster.steps(run_id, "end")):
            return True
        record = cluster.store.get(run_id)
        return record is not None and record.status in TERMINAL

    check = watched(workers, lambda: all(moved(r) for r in runs))
    wait_for("every run to make progress", check, timeout_s, every_s=0.1)


def assert_one_owner_at_a_time(cluster: Cluster, run_ids: Sequence[str]) -> None:
    """No step of one claim overlaps in time with a step of another claim of the same run.

    Steps are the model calls the test agent logs (start and end, wall clock, one host). A
    claim is its fencing token (unique per claim, even when Redis forgot the epoch)."""
    for run_id in run_ids:
        intervals: list[tuple[float, float, str]] = []
        open_steps: dict[tuple[str, int], float] = {}
        for event in cluster.steps(run_id):
            owner = (str(event.get("fence") or event["epoch"]), int(event["pid"]))
            if event["ev"] == "start":
                open_steps[owner] = event["t"]
            elif event["ev"] == "end" and owner in open_steps:
                intervals.append((open_steps.pop(owner), event["t"], owner[0]))
        # A step that never ended (its process died) still occupied its owner from its start.
        intervals += [(t, t, owner[0]) for owner, t in open_steps.items()]
        for a in intervals:
            for b in intervals:
                if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]:
                    raise AssertionError(f"run {run_id}: two owners stepped at once: {a} {b}")
