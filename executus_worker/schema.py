"""The published ``RunRequest`` JSON Schema: the cross-language enqueue contract.

Producers in other languages validate their payload against this document and publish
``executus.run`` with ``args=[run_id, request_json]``, where ``request_json`` is the payload
serialised as a JSON *string* (see ``executus_worker.client`` for the raw envelope). The byte-size
cap cannot be expressed in JSON Schema, so it travels as the ``x-executus`` annotation.

``executus-worker schema`` prints this document; it is built from the pydantic model on demand,
so it can never drift from what the worker accepts.
"""

from __future__ import annotations

import json
from typing import Any

from executus_worker.core.models import DEFAULT_MAX_PAYLOAD_BYTES, SCHEMA_VERSION, RunRequest

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"urn:executus-worker:run-request:v{SCHEMA_VERSION}"
RUN_TASK_NAME = "executus.run"


def run_request_schema(*, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """The JSON Schema of ``RunRequest`` plus the envelope facts a raw producer needs."""
    schema = RunRequest.model_json_schema(mode="validation")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = SCHEMA_ID
    schema["x-executus"] = {
        "schema_version": SCHEMA_VERSION,
        "task": RUN_TASK_NAME,
        "args": ["run_id", "request_json"],
        "request_json": "this document's instance serialised as a JSON string",
        # The worker fails a run whose message says otherwise (it never trusts the wire).
        "run_id_rule": "the request's run_id, when set, must equal args[0]",
        # The worker's cap is EXECUTUS_MAX_PAYLOAD_BYTES; this is its default.
        "max_payload_bytes": max_payload_bytes,
    }
    return schema


def run_request_schema_json(*, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    return json.dumps(
        run_request_schema(max_payload_bytes=max_payload_bytes), indent=2, sort_keys=True
    )
