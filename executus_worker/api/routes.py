"""The endpoints. Each is a thin translation of one ``Client`` call; errors are mapped to
statuses in ``problems``.

Plain ``def`` handlers run in the server's worker threads (the client is blocking); the event
stream is ``async`` and runs its blocking reads in threads itself.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Path, Query, Response, Security
from fastapi.responses import StreamingResponse

from executus_worker.api.auth import bearer_scheme
from executus_worker.api.problems import error_json
from executus_worker.api.stream import Cursor, RunFollower, StreamLimits, sse_stream
from executus_worker.api.views import (
    CURSOR_PATTERN,
    EnqueueView,
    ErrorView,
    RunView,
    TranscriptView,
)
from executus_worker.client import Client
from executus_worker.core.models import RunRequest
from executus_worker.settings import Settings

RunIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:+\-]+$",
        description="The run id (an idempotency key chosen at enqueue, or the one returned).",
    ),
]

_ERRORS: dict[int, str] = {
    400: "A malformed request (e.g. a Content-Length that is not a number).",
    401: "Missing or wrong bearer token.",
    404: "No such run (never enqueued, or past its retention).",
    409: "The run id exists with a different request; `fields` names what differs.",
    413: "The request body is over the size limit.",
    422: "The request is invalid (bad JSON, wrong schema, too deep) or names an agent no "
    "live worker serves.",
    503: "Redis or the broker is unreachable, or too many event streams are open.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorView, "description": _ERRORS[code]} for code in codes}


def _json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Errors of a route whose own media type is not JSON: FastAPI would document a ``model``
    under the route's type (``text/event-stream``), so the JSON content is spelled out."""
    schema = {"$ref": "#/components/schemas/ErrorView"}
    return {
        code: {"description": _ERRORS[code], "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


class _StreamSlots:
    """How many event streams are open: each holds a connection and polls Redis."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    async def wrap(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        # Counted while the body runs (the event loop is single-threaded: no lock needed).
        self.open += 1
        try:
            async for chunk in body:
                yield chunk
        finally:
            self.open -= 1


def run_routes(client: Client, settings: Settings) -> APIRouter:
    router = APIRouter(
        prefix="/v1",
        tags=["runs"],
        dependencies=[Security(bearer_scheme)],
        responses=_errors(400, 401),
    )
    # Enqueues are serialised: the client's publisher (a broker connection) is not promised to
    # be thread-safe, and an enqueue is a few Redis round trips.
    enqueue_lock = threading.Lock()
    slots = _StreamSlots(settings.api_max_streams)
    limits = StreamLimits(
        poll_s=settings.api_stream_poll_s,
        heartbeat_s=settings.api_stream_heartbeat_s,
        max_s=settings.api_stream_max_s,
    )

    @router.post(
        "/runs",
        status_code=201,
        response_model=EnqueueView,
        responses={
            200: {
                "model": EnqueueView,
                "description": "The run already existed with this "
                "same request: nothing was sent again.",
            },
            201: {"description": "Registered and published."},
            **_errors(409, 413, 422, 503),
        },
        summary="Enqueue a run (idempotent on run_id)",
    )
    def enqueue(
        run: RunRequest,
        response: Response,
        allow_unknown_agent: Annotated[
            bool,
            Query(description="Queue it even if no live worker serves the agent (a deploy)."),
        ] = False,
    ) -> EnqueueView:
        """Register the run (status `queued`) and publish it. Send a `run_id` to make retries
        safe: the same id with the same request returns the existing run (200) and sends
        nothing; with a different request it is refused (409)."""
        with enqueue_lock:
            result = client.submit(run, allow_unknown_agent=allow_unknown_agent)
        response.status_code = 201 if result.created else 200
        response.headers["Location"] = f"/v1/runs/{result.run_id}"
        return EnqueueView(created=result.created, run=RunView.of(result.record))

    @router.get(
        "/runs/{run_id}", response_model=RunView, responses=_errors(404, 422, 503), summary="Status"
    )
    def status(run_id: RunIdPath) -> RunView:
        return RunView.of(client.status(run_id))

    @router.get(
        "/runs/{run_id}/transcript",
        response_model=TranscriptView,
        responses=_errors(404, 422, 503),
        summary="Transcript",
    )
    def transcript(
        run_id: RunIdPath,
        offset: Annotated[int, Query(ge=0, description="First message to return.")] = 0,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> TranscriptView:
        """The latest checkpointed transcript (a finished run's final one, kept for its
        retention time)."""
        messages = client.transcript(run_id)
        end = None if limit is None else offset + limit
        return TranscriptView(
            run_id=run_id, total=len(messages), offset=offset, messages=messages[offset:end]
        )

    @router.post(
        "/runs/{run_id}/cancel",
        response_model=RunView,
        responses=_errors(404, 422, 503),
        summary="Cancel",
    )
    def cancel(run_id: RunIdPath) -> RunView:
        """A queued or interrupted run is `cancelled` at once; a running one stops at its next
        step (`cancel_requested` is true until then). A finished run is left as it is."""
        return RunView.of(client.cancel(run_id))

    @router.get(
        "/runs/{run_id}/events",
        response_class=EventStream,
        responses={
            200: {
                "description": "Server-Sent Events until the run ends: `status` (first, and on "
                "each change), `message` (id: messages held after it), `rewind` (the transcript "
                "was cut back: drop messages past `data.messages`), `error` (store unreachable; "
                "the stream goes on), `end` (last). Resume with Last-Event-ID or ?after=.",
                # The schema of each event: openapi.py.
                "content": {"text/event-stream": {}},
            },
            **_json_errors(400, 401, 404, 422, 503),
        },
        summary="Follow a run live (Server-Sent Events)",
    )
    async def events(
        run_id: RunIdPath,
        after: Annotated[
            int, Query(ge=0, le=1_000_000_000, description="Messages already held.")
        ] = 0,
        # A str defaulting to "" rather than an optional: a header cannot be null, and the
        # document should not say it can.
        last_event_id: Annotated[
            str,
            Header(
                pattern=f"^$|{CURSOR_PATTERN}",
                description="The id of the last event received (EventSource sends it when it "
                "reconnects): the stream resumes after it.",
            ),
        ] = "",
    ) -> Response:
        if slots.open >= slots.limit:
            return error_json(
                503,
                "too_many_streams",
                f"{slots.open} event streams are open (EXECUTUS_API_MAX_STREAMS); retry later",
            )
        cursor = Cursor.parse(last_event_id) if last_event_id else Cursor(messages=after)
        follower = RunFollower(client, run_id, cursor=cursor)
        # Read once before answering, so an unknown run is a 404, not an empty stream.
        opening = await anyio.to_thread.run_sync(follower.first)
        return EventStream(
            slots.wrap(sse_stream(follower, opening, limits)),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router
