"""The two Celery tasks, thin shells over ``RunHandler`` and ``Recovery``.

``executus.run`` accepts any arguments (``typing=False``) and validates them itself: a message
Celery would reject for its signature must still fail its run with a readable reason, and must
never crash the worker or come back.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task

from executus_worker.errors import StoreError
from executus_worker.publish import TASK_RECOVER, TASK_RUN
from executus_worker.worker.runtime import Runtime

log = logging.getLogger(__name__)

# Store unreachable before the run was claimed: try again shortly, a bounded number of times.
# After that the run stays `queued` and the sweep re-publishes it after queued_timeout_s.
_STORE_RETRY_COUNTDOWN_S = 5
_STORE_RETRIES = 12


def register_tasks(app: Celery, runtime: Runtime) -> None:
    # shared=False: each app's tasks close over that app's runtime; Celery's default would
    # hand the first app's callables to every later app built in the same process.
    @app.task(
        name=TASK_RUN,
        shared=False,
        bind=True,
        typing=False,
        # Our run record holds status and output; a result backend would only duplicate it.
        ignore_result=True,
        # Ack after the task returns and requeue if the child dies: a run whose process was
        # killed is redelivered (the claim turns a live-lease redelivery into a no-op).
        acks_late=True,
        reject_on_worker_lost=True,
    )
    def run(self: Task[Any, Any], *args: Any, **kwargs: Any) -> dict[str, str | None]:
        try:
            return runtime.handle(args, kwargs, task_id=self.request.id).as_dict()
        except SoftTimeLimitExceeded:
            # The shutdown escalation landed outside the run loop (claim, bookkeeping): the
            # lease expires and recovery resumes the run. Return normally, so it is acked.
            log.warning("task %s: shutdown escalation outside a run step", self.request.id)
            return {"action": "interrupted", "run_id": None, "outcome": None, "detail": ""}
        except StoreError as exc:
            log.warning("task %s: run store unavailable (%s), retrying", self.request.id, exc)
            raise self.retry(
                exc=exc, countdown=_STORE_RETRY_COUNTDOWN_S, max_retries=_STORE_RETRIES
            ) from exc

    @app.task(name=TASK_RECOVER, shared=False, ignore_result=True)
    def recover() -> dict[str, object]:
        """The same sweep the workers run in their MainProcess; for beat and operators."""
        return runtime.recovery().sweep().as_dict()
