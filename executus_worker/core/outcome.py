"""How an attempt ended, and the one write that records it.

The decision table (``classify``), in order:

    ended normally                          -> COMPLETED    complete(checkpoint, output)
    OwnershipLost (token or a fenced write) -> LOST         nothing: the new owner decides
    ShutdownRequested                       -> INTERRUPTED  interrupt(last completed step)
    CancelRequested                         -> CANCELLED    cancel(...)
    CriticKilled, BudgetExceeded            -> FAILED       fail(..., "<reason>: <detail>")
    UnsupportedFormatError (no stop pending
      but maybe a SHUTDOWN)                 -> PARKED       park(reason, its format)
    Exception while a stop is pending       -> as that stop (a SHUTDOWN makes it INTERRUPTED)
    any other Exception                     -> FAILED       fail(..., "ExcType: message")
    the finalize write itself raises        -> LOST         the lease expires; recovery decides

PARKED: a newer worker wrote the checkpoint (mixed versions during a deploy). Failing the run
would destroy work a newer worker can resume, so the run is left, checkpoint untouched, for a
worker that reads that format (the store's claim defers it for older ones). Any other
unreadable checkpoint fails the run; the checkpoint handle then keeps the stored checkpoint as it
is, because an attempt that never loaded it never writes over it (``RunCheckpointer``).

The "exception while a stop is pending" row exists because the way to cut a long step short is
to raise *into* it (Celery's SoftTimeLimitExceeded is an ``Exception``): a run cut short by a
shutdown must stay resumable, not be failed. Foreign BaseExceptions (KeyboardInterrupt,
SystemExit) never reach this module: the executor re-raises them after writing nothing.

A failure caused by an exception keeps its traceback, bounded (``MAX_TRACEBACK_CHARS``, the
innermost frames kept): the recorded error is ``ExcType: message`` on the first line and the
traceback after it, which is what ``status`` shows. Stops record their reason code instead
(``critic_kill: ...``, ``budget_exceeded: ...``): they are decisions, not bugs.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from pydantic import JsonValue

from executus_worker.core.models import Checkpoint, OutcomeKind, RunInfo, RunOutcome
from executus_worker.core.ports import Audit, RunCheckpointer
from executus_worker.core.stop import RunStopped, StopReason, StopToken
from executus_worker.errors import UnsupportedFormatError

log = logging.getLogger(__name__)

_KIND_FOR_STOP = {
    StopReason.SHUTDOWN: OutcomeKind.INTERRUPTED,
    StopReason.CANCEL: OutcomeKind.CANCELLED,
    StopReason.CRITIC: OutcomeKind.FAILED,
    StopReason.BUDGET: OutcomeKind.FAILED,
    StopReason.LOST_OWNERSHIP: OutcomeKind.LOST,
}


# A record keeps this much traceback: enough for the innermost frames of a deep stack, small
# enough that a failing agent cannot bloat every record it leaves behind.
MAX_TRACEBACK_CHARS = 4096
MAX_SUMMARY_CHARS = 1000


@dataclass(frozen=True)
class Verdict:
    kind: OutcomeKind
    error: str | None = None
    traceback: str | None = None
    needs_format: int = 0  # PARKED: the checkpoint format a worker must read to resume the run


def describe(exc: BaseException) -> str:
    """``ExcType: message``, the form errors are recorded in."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def bounded_traceback(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """The formatted traceback, cut from the front to ``limit`` characters: the frames nearest
    the failure and the exception line are what a reader needs."""
    text = "".join(traceback.format_exception(exc)).rstrip("\n")
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"... ({cut} characters cut)\n{text[cut:]}"


def error_text(error: str, tb: str | None) -> str:
    """What a failed run's record holds: the one-line summary, then the traceback if any."""
    summary = error if len(error) <= MAX_SUMMARY_CHARS else error[:MAX_SUMMARY_CHARS] + "..."
    return summary if not tb else f"{summary}\n{tb}"


def classify(exc: BaseException | None, stop: StopToken) -> Verdict:
    """The outcome for an attempt that ended with ``exc`` (None: it finished)."""
    if exc is None:
        return Verdict(OutcomeKind.COMPLETED)
    if isinstance(exc, RunStopped):
        cause = exc
    else:
        pending = _pending_stop(stop)
        if isinstance(exc, UnsupportedFormatError) and (
            pending is None or pending.reason is StopReason.SHUTDOWN
        ):
            return Verdict(OutcomeKind.PARKED, describe(exc), needs_format=exc.version)
        if pending is None:
            return Verdict(OutcomeKind.FAILED, describe(exc), bounded_traceback(exc))
        log.warning("run raised %s while stop %r was pending", describe(exc), pending.reason)
        cause = pending
    kind = _KIND_FOR_STOP[cause.reason]
    if kind is OutcomeKind.FAILED:
        # An exception raised into a step to end it (the critic's backstop) shows where the
        # step was stuck: worth keeping.
        tb = None if exc is cause else bounded_traceback(exc)
        return Verdict(kind, f"{cause.reason.value}: {cause.detail or 'stopped'}", tb)
    if kind is OutcomeKind.LOST:
        return Verdict(kind, describe(cause))
    return Verdict(kind)


def _pending_stop(stop: StopToken) -> RunStopped | None:
    try:
        stop.check()
    except RunStopped as pending:
        return pending
    return None


@dataclass(frozen=True)
class Finish:
    run: RunInfo
    checkpointer: RunCheckpointer
    stop: StopToken
    committed: Checkpoint  # the state after the last completed step
    audit: Audit


def finalize(
    finish: Finish, *, output: JsonValue = None, exc: BaseException | None = None
) -> RunOutcome:
    """Classify the ending, make its one write, and report it."""
    verdict = classify(exc, finish.stop)
    checkpointer, checkpoint = finish.checkpointer, finish.committed
    try:
        if verdict.kind is OutcomeKind.COMPLETED:
            checkpointer.complete(checkpoint, output)
        elif verdict.kind is OutcomeKind.INTERRUPTED:
            checkpointer.interrupt(checkpoint)
        elif verdict.kind is OutcomeKind.CANCELLED:
            checkpointer.cancel(checkpoint)
        elif verdict.kind is OutcomeKind.FAILED:
            checkpointer.fail(checkpoint, error_text(verdict.error or "failed", verdict.traceback))
        elif verdict.kind is OutcomeKind.PARKED:
            checkpointer.park(verdict.error or "checkpoint of a newer format", verdict.needs_format)
        # LOST: another attempt owns the run now; any write of ours would be fenced anyway.
    except (Exception, RunStopped) as write_error:
        log.warning(
            "run %s: recording %s failed: %s", finish.run.run_id, verdict.kind,
            describe(write_error),
        )  # fmt: skip
        verdict = Verdict(
            OutcomeKind.LOST, f"recording {verdict.kind} failed: {describe(write_error)}"
        )
    outcome = RunOutcome(
        kind=verdict.kind,
        run_id=finish.run.run_id,
        output=output if verdict.kind is OutcomeKind.COMPLETED else None,
        error=verdict.error,
        traceback=verdict.traceback,
        iterations=checkpoint.iteration,
    )
    log.info(
        "run %s %s after %d steps%s", outcome.run_id, outcome.kind, outcome.iterations,
        f": {outcome.error}" if outcome.error else "",
    )  # fmt: skip
    data: dict[str, JsonValue] = {"iterations": outcome.iterations}
    if outcome.error is not None:
        data["error"] = outcome.error
    if outcome.traceback is not None:
        data["traceback"] = outcome.traceback
    try:
        # The event is named after the outcome: completed, failed, interrupted, cancelled, lost.
        finish.audit.record(finish.run, outcome.kind.value, data)
    except Exception:
        log.exception("audit failed for run %s (ignored)", finish.run.run_id)
    return outcome
