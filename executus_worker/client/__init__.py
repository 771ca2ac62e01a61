"""What other services import to enqueue, inspect, wait for and cancel agent runs.

    from executus_worker.client import Client

    with Client.from_url("redis://127.0.0.1:6379/0") as client:
        run_id = client.enqueue(agent="demo.counter", input={"steps": 3, "step_s": 0})
        record = client.wait(run_id, timeout_s=30)   # RunRecord; raises WaitTimeout
        messages = client.transcript(run_id)

Enqueue order matters: the run is *registered* in Redis (status ``queued``) before its message
is published, so a crash between the two still leaves a run the recovery sweep re-publishes
(after ``queued_timeout_s``). Enqueue is idempotent on ``run_id``: a second call with an
existing id and the same request returns the same run and publishes nothing; the same id with a
different request raises ``RunConflictError`` naming the differing fields (an idempotency key
is bound to its payload).

Raw enqueue from another language (no Python, no registration): publish Celery task
``executus.run`` (protocol 2, JSON serializer) with ``args=[run_id, request]``, where
``request`` is a JSON *string* that validates against the schema printed by
``executus-worker schema``, on the queue ``settings.queue_for(model_tier)`` (default
``executus``), with the run id as task id (the schema's ``x-executus`` block). The worker
registers such a run on first sight; until then it is not visible to ``status``/``runs`` and a
lost message is not recovered. Prefer this client where you can.

Schedules: ``add_schedule(job)``, ``remove_schedule(name)``, ``schedules()``,
``pause_schedule(name)``, ``resume_schedule(name)`` act on the same Redis jobs as
``executus-worker schedules`` (``executus_worker.schedules``); beats pick changes up live.

This package never imports ``executus_worker.worker`` or ``executus_worker.batteries`` (an
architecture test enforces it), nor Celery: a producer service stays light.
Nothing connects until the first call that needs Redis or the broker.
"""

from executus_worker.client.client import Client
from executus_worker.client.ports import EnqueueResult, Publisher, WaitTimeout
from executus_worker.client.progress import RunProgress
from executus_worker.errors import PublishError, RunConflictError
from executus_worker.schedules.admin import JobView
from executus_worker.schedules.model import JobSpec

__all__ = [
    "Client",
    "EnqueueResult",
    "JobSpec",
    "JobView",
    "PublishError",
    "Publisher",
    "RunConflictError",
    "RunProgress",
    "WaitTimeout",
]
