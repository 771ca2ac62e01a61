"""The OpenAPI document: FastAPI's, plus what FastAPI cannot infer -- the shape of each event
of the Server-Sent Events stream.

Each event is documented the OpenAPI 3.2 way for ``text/event-stream``: an object with
``event``, ``data`` (a JSON string, described by ``contentMediaType`` / ``contentSchema``) and
``id``, one ``oneOf`` branch per event name. The payload models join the document's
components, so a client generator sees them as it sees the JSON responses.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from executus_worker.api.views import CURSOR_PATTERN, STREAM_EVENTS

_REF = "#/components/schemas/{model}"


def stream_schema() -> dict[str, Any]:
    """The schema of one event of the stream (comments and ``retry:`` frames carry none)."""
    branches = []
    for name, (model, has_id) in STREAM_EVENTS.items():
        properties: dict[str, Any] = {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": _REF.format(model=model.__name__)},
            },
        }
        required = ["event", "data"]
        if has_id:
            properties["id"] = {"type": "string", "pattern": CURSOR_PATTERN}
            required.append("id")
        branches.append({"type": "object", "properties": properties, "required": required})
    return {"oneOf": branches}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` build (once) the document with the stream's payload schemas."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _, defs = models_json_schema(
                [(model, "serialization") for model, _ in STREAM_EVENTS.values()],
                ref_template=_REF,
            )
            for operations in doc.get("paths", {}).values():
                for operation in operations.values():
                    ok = operation.get("responses", {}).get("200", {}).get("content", {})
                    if "text/event-stream" in ok:
                        # Replaces FastAPI's guess for a streaming response ("a string").
                        ok["text/event-stream"] = {"schema": stream_schema()}
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                # A model the routes already use keeps FastAPI's rendering of it.
                schemas.setdefault(name, schema)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
