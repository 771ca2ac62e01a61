"""Errors as JSON: every failure the API reports has the ``ErrorView`` shape, whichever layer
raised it (a middleware, FastAPI's validation, the client, Redis).

    ExecutusError / framework error      status  code
    RunNotFoundError                     404     run_not_found
    RunConflictError                     409     run_conflict (``fields`` names what differs)
    PayloadError                         422     invalid_request
    UnknownAgentError                    422     unknown_agent
    RequestValidationError (FastAPI)     422     invalid_request (``where`` lists locations)
    PublishError                         503     publish_failed (registered; the sweep sends it)
    StoreError, redis.RedisError         503     store_unavailable
    Starlette HTTPException              its own not_found, method_not_allowed, ...
    anything else                        500     internal_error (logged; no detail leaks)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from executus_worker.api.views import ErrorDetail, ErrorView
from executus_worker.errors import (
    PayloadError,
    PublishError,
    RunConflictError,
    RunNotFoundError,
    StoreError,
    UnknownAgentError,
)

log = logging.getLogger(__name__)

_MAX_WHERE = 10


def error_json(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorView(error=ErrorDetail(code=code, message=message, **extra))
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status)


def error_bytes(code: str, message: str) -> bytes:
    """The same body for the pure-ASGI middlewares, which answer before FastAPI runs."""
    body = ErrorView(error=ErrorDetail(code=code, message=message))
    return json.dumps(
        body.model_dump(mode="json", exclude_none=True), separators=(",", ":")
    ).encode()


def install(app: FastAPI) -> None:
    app.add_exception_handler(RunNotFoundError, _not_found)
    app.add_exception_handler(RunConflictError, _conflict)
    app.add_exception_handler(PayloadError, _payload)
    app.add_exception_handler(UnknownAgentError, _unknown_agent)
    app.add_exception_handler(PublishError, _publish)
    app.add_exception_handler(StoreError, _store)
    app.add_exception_handler(redis.RedisError, _store)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _internal)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunNotFoundError)
    return error_json(404, "run_not_found", str(exc), run_id=exc.run_id)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RunConflictError)
    return error_json(409, "run_conflict", str(exc), run_id=exc.run_id, fields=list(exc.fields))


async def _payload(_: Request, exc: Exception) -> JSONResponse:
    return error_json(422, "invalid_request", str(exc))


async def _unknown_agent(_: Request, exc: Exception) -> JSONResponse:
    # The client's message names the library flag; say how to pass it over HTTP as well.
    message = f"{exc} (over HTTP: ?allow_unknown_agent=true)"
    return error_json(422, "unknown_agent", message)


async def _publish(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PublishError)
    return error_json(503, "publish_failed", str(exc), run_id=exc.run_id)


async def _store(_: Request, exc: Exception) -> JSONResponse:
    log.warning("run store unavailable: %s", exc)
    return error_json(503, "store_unavailable", f"the run store is unavailable: {exc}")


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(err) for err in exc.errors()]
    where = [_location(err.get("loc", ())) for err in exc.errors()][:_MAX_WHERE]
    more = len(problems) - _MAX_WHERE
    message = "; ".join(problems[:_MAX_WHERE]) + (f" (+{more} more)" if more > 0 else "")
    return error_json(422, "invalid_request", message, where=where)


def _location(loc: Sequence[object]) -> str:
    return ".".join(str(part) for part in loc) or "<request>"


def _problem(err: Any) -> str:
    # FastAPI echoes the rejected input in ``err["input"]``; messages and locations only (the
    # input may be large, or user content that must not land in a log line downstream).
    return f"{_location(err.get('loc', ()))}: {err.get('msg', 'invalid')}"


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    message = exc.detail if isinstance(exc.detail, str) else phrase
    response = error_json(exc.status_code, code, message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_json(500, "internal_error", "internal error (logged by the API server)")
