"""What the HTTP API answers: the JSON shapes of runs, transcripts and errors (in the OpenAPI
document as component schemas, so clients can generate their types)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from executus_worker.core.models import Message, RunRecord, RunRequest, RunStatus


class RunView(BaseModel):
    """A run as callers see it: the record without its internals (owner, fence)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    status: RunStatus
    agent: str
    queue: str
    attempts: int = Field(description="Execution attempts so far (a resumed run counts again).")
    cancel_requested: bool
    created_at: float = Field(description="Unix time, seconds.")
    updated_at: float
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    output: JsonValue = Field(description="The run's output once completed, else null.")
    error: str | None = Field(description="Why it failed, was cancelled or became dead.")
    request: RunRequest

    @classmethod
    def of(cls, record: RunRecord) -> RunView:
        return cls(
            run_id=record.run_id,
            status=record.status,
            agent=record.agent,
            queue=record.queue,
            attempts=record.attempts,
            cancel_requested=record.cancel_requested,
            created_at=record.created_at,
            updated_at=record.updated_at,
            enqueued_at=record.enqueued_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            output=record.output,
            error=record.error,
            request=record.request,
        )


class EnqueueView(BaseModel):
    """The answer to an enqueue: ``created`` is false when the run id already existed with the
    same request (nothing was sent again)."""

    created: bool
    run: RunView


class TranscriptView(BaseModel):
    run_id: str
    total: int = Field(description="Messages in the whole transcript.")
    offset: int = Field(description="Index of the first message in `messages`.")
    messages: list[Message]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: e.g. run_not_found, run_conflict.")
    message: str = Field(description="For people: what was wrong and where.")
    run_id: str | None = None
    fields: list[str] | None = Field(
        default=None,
        description="run_conflict: the request fields that differ from the stored run.",
    )
    where: list[str] | None = Field(
        default=None, description="invalid_request: the locations that failed validation."
    )


class ErrorView(BaseModel):
    """Every error the API returns, whatever its status code."""

    error: ErrorDetail


class Health(BaseModel):
    status: str


# -- the event stream's payloads (each event's `data` is one of these, as JSON) -------------


class StatusEvent(RunView):
    """``event: status``: the run, and how many transcript messages it has."""

    messages: int


class MessageEvent(BaseModel):
    """``event: message``: one new transcript message."""

    index: int
    message: Message


class RewindEvent(BaseModel):
    """``event: rewind``: the transcript was cut back to ``messages``: drop the rest."""

    messages: int


class AuditEvent(BaseModel):
    """``event: audit``: one entry of the run's event stream (what the workers, the client
    and the sweep recorded: enqueued, claimed, step, interrupted, recovered, completed, ...)."""

    id: str = Field(description="The entry's stream id (sortable).")
    event: str
    ts: float = Field(description="Unix time, seconds.")
    data: dict[str, JsonValue]


class EndEvent(BaseModel):
    """``event: end``: the last event of a stream."""

    reason: Literal["terminal", "timeout", "gone"]
    status: RunStatus | None


# An event id: messages held, and the last audit entry's stream id once there is one.
CURSOR_PATTERN = r"^[0-9]{1,10}(/[0-9]{1,20}-[0-9]{1,20})?$"

# event name -> its data model, and whether it carries an id (the stream's resume cursor).
STREAM_EVENTS: dict[str, tuple[type[BaseModel], bool]] = {
    "status": (StatusEvent, False),
    "message": (MessageEvent, True),
    "rewind": (RewindEvent, True),
    "audit": (AuditEvent, True),
    "error": (ErrorDetail, False),
    "end": (EndEvent, False),
}
