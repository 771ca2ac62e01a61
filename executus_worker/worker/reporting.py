"""What Celery says about an ``executus.run`` delivery: the run's ending, in Celery's terms.

Celery derives a task's state -- in Flower, in ``task-*`` events, in a sender's
``AsyncResult`` -- from how the task function ends. The run record stays the truth; ``report``
translates one delivery's ``Handled`` into the ending Celery understands:

    the delivery                              Celery state  the task
    executed: the run completed               SUCCESS       returns the output (with a result
                                                            backend) or {run_id, status}
    executed: failed; dead; failed on sight   FAILURE       raises RunFailed(reason)
    executed: cancelled; cancelled at claim   REVOKED       raises RunCancelled (see delivery.py)
    executed: interrupted; attempt crashed    RETRY         raises Retry(RunInterrupted(...))
    executed: ownership lost                  (none)        raises Ignore: the new owner reports
    duplicate of a live run                   (none)        raises Ignore: the owner reports
    duplicate of a finished run               its ending    as above, from the stored record

RETRY sends nothing: the recovery sweep re-publishes an interrupted run, with the same task id
when the run's messages use the run id as task id (ours do), so an ``AsyncResult`` follows the
run through any number of interruptions to its ending. No state is written by a delivery that
did not decide the run's ending, so a duplicate can never overwrite the owner's result.

Without a result backend (the default) nothing here costs a round trip: a completed run returns
a two-field summary, so no output -- which may hold user content -- reaches the worker log or
task events. With ``EXECUTUS_RESULT_BACKEND`` set, a completed run returns its output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore, Retry

from executus_worker.core.models import OutcomeKind, RunRecord, RunStatus
from executus_worker.worker.runs import Handled


class RunFailed(Exception):
    """The run failed, died or could not be accepted; the message is the reason."""


class RunCancelled(Ignore):
    """The run was cancelled. An ``Ignore`` so the pool child stores nothing; the worker's
    request class (``delivery.RunDelivery``) then announces REVOKED as Celery's revoke does."""


class RunInterrupted(Exception):
    """The run stopped before its end and stays resumable (the reason of a RETRY)."""


# Stored endings of a finished run, for a late duplicate to report the same thing.
_STATUS_ENDING = {
    RunStatus.COMPLETED: OutcomeKind.COMPLETED,
    RunStatus.FAILED: OutcomeKind.FAILED,
    RunStatus.DEAD: OutcomeKind.FAILED,
    RunStatus.CANCELLED: OutcomeKind.CANCELLED,
}


def report(
    handled: Handled,
    *,
    with_output: bool,
    lookup: Callable[[str], RunRecord | None],
) -> Any:
    """The task's return value for ``handled``, or the exception that tells Celery the rest.

    ``lookup`` reads a run's record; only a late duplicate of a finished run uses it.
    """
    action, run_id = handled.action, handled.run_id
    if action == "executed":
        return _ending(handled.outcome, run_id, handled.output, handled.detail, with_output)
    if action == "duplicate":
        record = lookup(run_id) if run_id is not None and handled.detail == "gone" else None
        ending = _STATUS_ENDING.get(record.status) if record is not None else None
        if record is None or ending is None:
            raise Ignore(f"duplicate delivery of run {run_id} ({handled.detail})")
        return _ending(ending, run_id, record.output, record.error or "", with_output)
    if action == "cancelled":
        raise RunCancelled(f"run {run_id} was cancelled")
    if action in {"failed", "dead", "rejected"}:
        raise RunFailed(_reason(action, handled.detail))
    if action == "crashed":
        raise _retry(run_id, f"attempt crashed: {handled.detail}")
    # Anything else decided nothing about the run's ending; whoever does will report it.
    raise Ignore(f"run {run_id}: {action} {handled.detail}".rstrip())


def _ending(
    kind: OutcomeKind | None, run_id: str | None, output: Any, detail: str, with_output: bool
) -> Any:
    if kind is OutcomeKind.COMPLETED:
        if with_output:
            return output
        return {"run_id": run_id, "status": RunStatus.COMPLETED.value}
    if kind is OutcomeKind.FAILED:
        raise RunFailed(detail or "failed")
    if kind is OutcomeKind.CANCELLED:
        raise RunCancelled(f"run {run_id} was cancelled")
    if kind is OutcomeKind.INTERRUPTED:
        raise _retry(run_id, "interrupted at a step boundary; it resumes from its checkpoint")
    raise Ignore(f"run {run_id}: {kind} {detail}".rstrip())  # LOST: the new owner reports


def _reason(action: str, detail: str) -> str:
    if action == "dead":
        return f"dead: {detail}" if detail else "dead"
    return detail or action


def _retry(run_id: str | None, why: str) -> Retry:
    # No new message is sent (Task.retry would send one): the recovery sweep re-publishes it.
    return Retry(f"run {run_id} {why}", exc=RunInterrupted(why))
