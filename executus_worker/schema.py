"""The published ``RunRequest`` JSON Schema: the cross-language enqueue contract.

Producers in other languages validate their payload against this document and publish it as
Celery's ``executus.run`` task. The ``x-executus`` block carries what JSON Schema cannot say: the
task name, the queue to publish on (Celery's default queue is ``celery``, which no executus
worker reads), the argument layout ``args=[run_id, request]`` -- ``request`` being this document's
instance serialised as a JSON *string* --, the task id to use, and the byte-size cap.

``executus-worker schema`` prints this document; it is built from the pydantic model on demand,
so it can never drift from what the worker accepts.
"""

from __future__ import annotations

import json
from typing import Any

from executus_worker.core.models import SCHEMA_VERSION, RunRequest
from executus_worker.settings import Settings

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:executus-worker:run-request:v{SCHEMA_VERSION}"
RUN_TASK_NAME = "executus.run"


def run_request_schema(settings: Settings | None = None) -> dict[str, Any]:
    """The JSON Schema of ``RunRequest`` plus the envelope facts a raw producer needs.

    The queues and the size cap are this deployment's (``settings``, default: the defaults).
    """
    s = settings or Settings()
    schema = RunRequest.model_json_schema(mode="validation")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = SCHEMA_ID
    schema["x-executus"] = {
        "schema_version": SCHEMA_VERSION,
        "protocol": "Celery task message protocol 2, JSON serializer",
        "task": RUN_TASK_NAME,
        # Without it Celery senders (send_task, celery-node) publish to `celery`, a queue no
        # executus worker reads: the run would wait there forever.
        "queue": s.default_queue,
        "queue_by_model_tier": dict(s.tier_queues),
        "args": ["run_id", "request"],
        "kwargs": {},
        # The same two names also work as keyword arguments (kwargs={"run_id", "request"}).
        "request": "this document's instance serialised as a JSON string",
        # Every message we publish for a run uses the run id as task id; a sender that does the
        # same can revoke the run and follow it in AsyncResult across its recoveries.
        "task_id": "the run id (recommended)",
        # The worker fails a run whose message says otherwise (it never trusts the wire).
        "run_id_rule": "the request's run_id, when set, must equal args[0]",
        # The worker's cap is EXECUTUS_MAX_PAYLOAD_BYTES.
        "max_payload_bytes": s.max_payload_bytes,
    }
    return schema


def run_request_schema_json(settings: Settings | None = None) -> str:
    return json.dumps(run_request_schema(settings), indent=2, sort_keys=True)
