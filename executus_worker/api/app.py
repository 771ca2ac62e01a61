"""``create_app``: the ASGI application, built from settings and a ``Client``.

Layers, outermost first: ``BearerAuth`` (401 before a byte of the body is read), ``BodyLimits``
(413 / 422 before anything parses the body), then FastAPI's routing, validation and the
error handlers of ``problems``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.middleware import Middleware

from executus_worker import __version__
from executus_worker.api import openapi, problems
from executus_worker.api.auth import BearerAuth
from executus_worker.api.limits import BodyLimits
from executus_worker.api.routes import run_routes
from executus_worker.api.views import ErrorView, Health
from executus_worker.client import Client
from executus_worker.errors import RunNotFoundError
from executus_worker.settings import Settings

OPENAPI_PATH = "/openapi.json"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", OPENAPI_PATH})
# Any id serves a readiness read; a telling one keeps it obvious in a Redis MONITOR.
_READINESS_PROBE_ID = "executus.api.readiness-probe"

DESCRIPTION = """\
Enqueue durable agent runs and follow them, for services that do not speak Celery.

Send `Authorization: Bearer <EXECUTUS_API_TOKEN>` on every `/v1` request when the server has a
token. Errors always have the shape `{"error": {"code", "message", ...}}`.
"""


def known_query_only(request: Request) -> None:
    """A query parameter the operation does not take is an error, not ignored: a misspelt
    ``allow_unknown_agents=true`` must not quietly mean false."""
    route = request.scope.get("route")
    known = {p.alias for p in route.dependant.query_params} if isinstance(route, APIRoute) else ()
    unknown = sorted(set(request.query_params).difference(known))
    if unknown:
        problem = {"msg": "unknown query parameter", "type": "extra_forbidden"}
        raise RequestValidationError([{"loc": ("query", name), **problem} for name in unknown])


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The API over ``client`` (default: one built from ``settings``, closed at shutdown)."""
    owned = client is None
    runs = client if client is not None else Client(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Build the client's lazy members now: worker threads must not race to create them.
        # None connects yet.
        runs.store  # noqa: B018
        runs.publisher  # noqa: B018
        runs.event_log  # noqa: B018
        yield
        if owned:
            runs.close()

    app = FastAPI(
        title="executus_worker API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=OPENAPI_PATH,
        # The interactive pages load their scripts from a CDN: not from a worker's host.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[Depends(known_query_only)],
        middleware=[
            Middleware(BearerAuth, token=settings.api_token, public_paths=PUBLIC_PATHS),
            Middleware(
                BodyLimits,
                max_bytes=settings.effective_api_max_body_bytes,
                max_depth=settings.api_max_json_depth,
            ),
        ],
    )
    problems.install(app)
    openapi.install(app)
    app.include_router(run_routes(runs, settings))

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness")
    def healthz() -> Health:
        """The process answers (no Redis involved)."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        summary="Readiness",
        responses={503: {"model": ErrorView, "description": "Redis is unreachable."}},
    )
    def readyz() -> Health:
        """Redis answers a read (503 otherwise)."""
        # A round trip that finds nothing is still Redis answering.
        with contextlib.suppress(RunNotFoundError):
            runs.status(_READINESS_PROBE_ID)
        return Health(status="ok")

    return app
