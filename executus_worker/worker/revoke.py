"""Celery's revoke, made durable: revoking a run's task cancels the run in the store.

Celery's revoke alone does not stop a run. It adds the task id to each worker's in-memory
revoked set (lost on restart), drops a revoked message on arrival, and with ``terminate`` kills
the process running it -- after which the run's lease expires and the recovery sweep, which
knows nothing of Celery's revokes, re-publishes it and it completes. So every revoke also
requests the run's cancel in the store (``RunStore.request_cancel``), which no sweep undoes:
a queued or interrupted run is cancelled at once, a running one stops at its next step
boundary (with ``terminate`` its process is killed first and the claim after its lease ends
it), and every later delivery of it is a no-op that reports REVOKED.

Two hooks, both in the worker's MainProcess:

- ``RevokeHook.commands`` replaces this worker's ``revoke`` and ``terminate`` remote-control
  commands (Flower, ``celery control revoke|terminate``, ``AsyncResult.revoke``; see
  ``bootsteps.remote_control_step``): they cancel the runs first, then run Celery's command.
- ``RevokeHook.on_task_revoked`` (the ``task_revoked`` signal) covers a message that arrives
  already revoked, or expired: Celery drops it, and the run it names is cancelled.

Which run a task id names: the run of a delivery this worker holds (its arguments say), else the
task id itself -- our publishers send every message of a run with the run id as its task id,
and a raw ``send_task`` without a run id makes its task id the run id. A revoke by some other
task id of a message no worker holds yet takes effect when the message arrives (above).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from celery.utils.functional import maybe_list
from celery.worker import state as worker_state

from executus_worker.checkpoint.store import RunStore
from executus_worker.core.models import RunStatus
from executus_worker.errors import ExecutusError, RunNotFoundError
from executus_worker.publish import TASK_RUN
from executus_worker.worker.delivery import CANCELLED_MARK, UNKNOWN, run_and_agent

log = logging.getLogger(__name__)

ControlCommand = Callable[..., Any]


def held_runs(task_ids: set[str]) -> dict[str, str]:
    """task id -> run id, for the ``executus.run`` deliveries this worker holds right now."""
    found: dict[str, str] = {}
    for _ in range(3):
        try:  # the consumer thread may change the sets while we read them
            held = [*worker_state.active_requests, *worker_state.reserved_requests]
        except RuntimeError:
            continue
        for request in held:
            if request.id in task_ids and request.name == TASK_RUN:
                run_id, _ = run_and_agent(request.args, request.kwargs, request.id)
                if run_id != UNKNOWN:
                    found[request.id] = run_id
        break
    return found


class RevokeHook:
    def __init__(
        self,
        store: Callable[[], RunStore],
        *,
        is_ours: Callable[[Any], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._is_ours = is_ours  # is this Celery task one of our app's?
        self._clock = clock

    def cancel(self, run_ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Request the cancel of each run: (cancelled or flagged, failed to reach the store).
        An id naming no run (a task of another app, a run never registered) or a run that
        already ended otherwise is skipped."""
        done: list[str] = []
        failed: list[str] = []
        for run_id in dict.fromkeys(run_ids):
            try:
                record = self._store().request_cancel(run_id, now=self._clock())
            except RunNotFoundError:
                continue
            except (ExecutusError, OSError) as exc:
                log.error("revoke: cancelling run %s failed: %s", run_id, exc)
                failed.append(run_id)
                continue
            if record.status.terminal and record.status is not RunStatus.CANCELLED:
                log.info("revoke: run %s had already ended %s", run_id, record.status.value)
                continue
            log.warning("revoke: run %s cancel requested (now %s)", run_id, record.status.value)
            done.append(run_id)
        return done, failed

    def commands(self, celery: dict[str, ControlCommand]) -> dict[str, ControlCommand]:
        """``revoke`` and ``terminate`` (which calls Celery's revoke directly, not through the
        handler table): each cancels the runs first, then runs Celery's command unchanged."""
        celery_revoke, celery_terminate = celery["revoke"], celery["terminate"]

        def revoke(state: Any, task_id: Any, **kwargs: Any) -> Any:
            notes = self._cancel_named(task_id)
            return _noted(celery_revoke(state, task_id, **kwargs), notes)

        def terminate(state: Any, signal: Any, task_id: Any, **kwargs: Any) -> Any:
            notes = self._cancel_named(task_id)
            return _noted(celery_terminate(state, signal, task_id, **kwargs), notes)

        return {"revoke": revoke, "terminate": terminate}

    def _cancel_named(self, task_id: Any) -> str:
        """Cancel the runs the task ids name; what to add to the command's reply."""
        task_ids = {str(t) for t in maybe_list(task_id) or []}
        held = held_runs(task_ids)
        done, failed = self.cancel([*held.values(), *(t for t in task_ids if t not in held)])
        if not done and not failed:
            return ""
        note = f"; runs cancelled: {', '.join(done) or 'none'}"
        if failed:
            note += f"; store unreachable for: {', '.join(failed)}"
        return note

    def on_task_revoked(self, sender: Any = None, request: Any = None, **kwargs: Any) -> None:
        """``task_revoked``: a delivery Celery dropped as revoked or expired, or killed."""
        if request is None or not self._is_ours(sender) or getattr(request, CANCELLED_MARK, False):
            return
        if getattr(sender, "name", None) != TASK_RUN:
            return
        run_id, _ = run_and_agent(request.args, request.kwargs, request.id)
        if run_id != UNKNOWN:
            self.cancel([run_id])


def _noted(reply: Any, note: str) -> Any:
    if note and isinstance(reply, dict) and "ok" in reply:
        return {**reply, "ok": str(reply["ok"]) + note}
    return reply
