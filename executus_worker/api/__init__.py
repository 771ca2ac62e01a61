"""The HTTP API for services that do not speak Celery (``executus-worker api``).

    POST /v1/runs                       enqueue (idempotent on run_id)        201 | 200 | 409
    GET  /v1/runs/{run_id}              status                                200 | 404
    GET  /v1/runs/{run_id}/transcript   transcript (?offset, ?limit)          200 | 404
    POST /v1/runs/{run_id}/cancel       cancel                                200 | 404
    GET  /v1/runs/{run_id}/events       live Server-Sent Events until the run ends
    GET  /healthz, /readyz              liveness; readiness (Redis answers)
    GET  /openapi.json                  the OpenAPI document

app.py       create_app: FastAPI with the two guards in front
auth.py      bearer token (EXECUTUS_API_TOKEN), constant-time, before the body is read
limits.py    body size and JSON nesting caps, before anything parses
routes.py    the endpoints, each one Client call
stream.py    the event stream: what changed in a run since the last read
problems.py  every error as {"error": {"code", "message", ...}}
views.py     the response shapes
server.py    uvicorn, and no token -> loopback only

Everything goes through ``executus_worker.client.Client``: this package never imports the
worker or the batteries (tests/test_architecture.py), and only ``cli`` imports it.
"""

from executus_worker.api.app import create_app
from executus_worker.api.server import check_bind, is_loopback, serve

__all__ = ["check_bind", "create_app", "is_loopback", "serve"]
