"""What Celery is told about each ending of a delivery (the table in worker/reporting.py)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Ignore, Retry

from executus_worker.core.models import OutcomeKind, RunRecord, RunRequest, RunStatus
from executus_worker.worker.reporting import RunCancelled, RunFailed, RunInterrupted, report
from executus_worker.worker.runs import Handled


def _record(status: RunStatus, *, output: Any = None, error: str | None = None) -> RunRecord:
    request = RunRequest(run_id="r1", agent="demo.counter")
    return RunRecord(
        run_id="r1", status=status, agent="demo.counter", request=request, queue="executus",
        output=output, error=error,
    )  # fmt: skip


def _nothing_stored(run_id: str) -> RunRecord | None:
    raise AssertionError("only a late duplicate of a finished run reads the record")


def _report(handled: Handled, *, with_output: bool = False, record: RunRecord | None = None) -> Any:
    lookup = (lambda run_id: record) if record is not None else _nothing_stored
    return report(handled, with_output=with_output, lookup=lookup)


def test_a_completed_run_succeeds_with_its_output_only_where_results_are_stored() -> None:
    done = Handled("executed", "r1", OutcomeKind.COMPLETED, output={"answer": 42})
    assert _report(done, with_output=True) == {"answer": 42}
    assert _report(done) == {"run_id": "r1", "status": "completed"}


@pytest.mark.parametrize(
    ("handled", "reason"),
    [
        (Handled("executed", "r1", OutcomeKind.FAILED, "ValueError: boom"), "ValueError: boom"),
        (Handled("failed", "r1", OutcomeKind.FAILED, "unknown agent 'x'"), "unknown agent 'x'"),
        (Handled("dead", "r1", detail="gave up after 5"), "dead: gave up after 5"),
        (Handled("rejected", None, detail="no run id"), "no run id"),
    ],
)
def test_failed_dead_and_refused_runs_fail_with_the_reason(handled: Handled, reason: str) -> None:
    with pytest.raises(RunFailed, match="^" + reason.replace("(", r"\(") + "$"):
        _report(handled)


def test_a_cancelled_run_is_revoked() -> None:
    with pytest.raises(RunCancelled):
        _report(Handled("executed", "r1", OutcomeKind.CANCELLED))
    with pytest.raises(RunCancelled):
        _report(Handled("cancelled", "r1", OutcomeKind.CANCELLED))


@pytest.mark.parametrize(
    "handled",
    [
        Handled("executed", "r1", OutcomeKind.INTERRUPTED),
        Handled("crashed", "r1", detail="RuntimeError: lost the store"),
    ],
)
def test_an_interrupted_run_is_a_retry_that_sends_nothing(handled: Handled) -> None:
    with pytest.raises(Retry) as caught:
        _report(handled)
    assert isinstance(caught.value.exc, RunInterrupted)
    assert caught.value.sig is None  # Task.retry would have re-sent; the sweep does that


@pytest.mark.parametrize(
    "handled",
    [
        Handled("executed", "r1", OutcomeKind.LOST, "OwnershipLost: epoch 2"),
        Handled("duplicate", "r1", detail="busy"),
    ],
)
def test_a_delivery_that_decided_nothing_writes_no_state(handled: Handled) -> None:
    with pytest.raises(Ignore) as caught:
        _report(handled)
    assert not isinstance(caught.value, RunCancelled)


def test_a_late_duplicate_reports_the_stored_ending() -> None:
    gone = Handled("duplicate", "r1", detail="gone")
    done = _record(RunStatus.COMPLETED, output="done 3")
    assert _report(gone, with_output=True, record=done) == "done 3"
    with pytest.raises(RunFailed, match="boom"):
        _report(gone, record=_record(RunStatus.FAILED, error="boom"))
    with pytest.raises(RunCancelled):
        _report(gone, record=_record(RunStatus.CANCELLED))
    with pytest.raises(Ignore):  # still queued: whoever runs it reports
        _report(gone, record=_record(RunStatus.QUEUED))
