"""The two Celery tasks, thin shells over ``RunHandler`` and ``Recovery``.

``executus.run`` accepts any arguments (``typing=False``) and validates them itself: a message
Celery would reject for its signature must still fail its run with a readable reason, and must
never crash the worker or come back. How it ends tells Celery the run's ending
(``reporting``): SUCCESS, FAILURE, REVOKED or RETRY, never an error of the worker itself.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task

from executus_worker.checkpoint.settle import settling
from executus_worker.core.models import RunRecord
from executus_worker.errors import ExecutusError, StoreError
from executus_worker.publish import TASK_RECOVER, TASK_RUN
from executus_worker.worker.delivery import SETTLE_KEY, RunDelivery
from executus_worker.worker.messages import read_delivery
from executus_worker.worker.preclaim import PRECLAIM_KEY, delivering
from executus_worker.worker.reporting import RunFailed, report
from executus_worker.worker.runs import Handled, record_unhandled
from executus_worker.worker.runtime import Runtime

log = logging.getLogger(__name__)

# Store unreachable before the run was claimed: try again shortly, a bounded number of times.
# After that the run stays `queued` and the sweep re-publishes it after queued_timeout_s.
_STORE_RETRY_COUNTDOWN_S = 5
_STORE_RETRIES = 12


def register_tasks(app: Celery, runtime: Runtime) -> None:
    # shared=False: each app's tasks close over that app's runtime; Celery's default would
    # hand the first app's callables to every later app built in the same process.
    with_output = runtime.settings.result_backend is not None

    @app.task(
        name=TASK_RUN,
        shared=False,
        bind=True,
        typing=False,
        # The run record holds status and output; a result backend (opt-in) gets the ending too.
        ignore_result=not with_output,
        # Ack after the task returns and requeue if the child dies: a run whose process was
        # killed is redelivered (the claim turns a live-lease redelivery into a no-op).
        acks_late=True,
        reject_on_worker_lost=True,
        # How Celery reports each ending: see reporting.py. A failed run is an expected
        # ending, logged without a traceback of the task shell.
        Request=RunDelivery,
        throws=(RunFailed,),
    )
    def run(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        try:
            # First, so that its round trip overlaps what follows (preclaim.Ahead).
            claimed = getattr(self.request, PRECLAIM_KEY, None) or runtime.claim_ahead(args, kwargs)
            # Around the fallback too: recording an unhandled delivery takes the same claim.
            with delivering(runtime.store, claimed):
                try:
                    settle = runtime.settle_for(getattr(self.request, SETTLE_KEY, None))
                    with settling(settle):
                        handled = runtime.handle(args, kwargs, task_id=task_id)
                except (StoreError, SoftTimeLimitExceeded):
                    raise
                except Exception as exc:
                    # The handler itself never raises (a StoreError aside), so this process
                    # could not build its handler. The message is consumed all the same: the
                    # run's record must say why rather than stay `queued` (needs the store
                    # only). The worker refuses to start on the usual cause, a bad agents file
                    # (factory.py).
                    log.exception("task %s: the run handler cannot be built", task_id)
                    delivery = read_delivery(
                        args, kwargs, task_id=task_id, max_bytes=runtime.settings.max_payload_bytes
                    )
                    handled = record_unhandled(runtime.recorder(), delivery, exc)
        except SoftTimeLimitExceeded:
            # The shutdown escalation landed outside the run loop (claim, bookkeeping): the
            # lease expires and recovery resumes the run. Ack it; Celery shows RETRY.
            log.warning("task %s: shutdown escalation outside a run step", task_id)
            handled = Handled("crashed", detail="shutdown escalation outside a run step")
        except StoreError as exc:
            log.warning("task %s: run store unavailable (%s), retrying", task_id, exc)
            raise self.retry(
                exc=exc, countdown=_STORE_RETRY_COUNTDOWN_S, max_retries=_STORE_RETRIES
            ) from exc
        return report(handled, with_output=with_output, lookup=stored)

    def stored(run_id: str) -> RunRecord | None:
        """A run's record, for a late duplicate to report its ending (None if unreadable)."""
        try:
            return runtime.store().get(run_id)
        except ExecutusError as exc:
            log.warning("run %s: cannot read its record to report it: %s", run_id, exc)
            return None

    @app.task(name=TASK_RECOVER, shared=False, ignore_result=True)
    def recover() -> dict[str, object]:
        """The same sweep the workers run in their MainProcess; for beat and operators."""
        return runtime.recovery().sweep().as_dict()
