"""The data a run is made of: the public request, the run's identity, messages, checkpoints.

Everything here is JSON-only pydantic. ``RunRequest`` is the public wire contract (its JSON
Schema is what other services validate against), so it rejects unknown fields and is versioned
by an explicit ``schema_version``.
"""

from __future__ import annotations

import enum
import threading
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator

from executus_worker.core.jsoncap import check_text, dumps_capped
from executus_worker.core.limits import check_metadata
from executus_worker.errors import PayloadError

SCHEMA_VERSION: Literal[1] = 1
CHECKPOINT_FORMAT_VERSION = 1
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024

# Run ids become part of Redis keys and log lines: keep them printable and bounded.
# ':' is allowed because scheduled fires use ``sched:<job>:<iso time>``.
# A run id's characters and length; the worker reads ids from raw messages by the same rule
# (worker/messages.py).
RUN_ID_CHARS = r"A-Za-z0-9._:+\-"
RUN_ID_MAX = 200
RunId = Annotated[str, Field(min_length=1, max_length=RUN_ID_MAX, pattern=f"^[{RUN_ID_CHARS}]+$")]
AgentName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._\-]+$")]


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"  # gave up after max_recovery_attempts

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DEAD}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunLimits(_Strict):
    max_iterations: int = Field(default=50, ge=1, le=100_000)


class RunRequest(_Strict):
    """What another service sends to start an agent run (the public, versioned payload)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: RunId | None = None
    agent: AgentName
    input: dict[str, JsonValue] = Field(default_factory=dict)
    guild_id: str | None = Field(default=None, max_length=200)
    model_tier: str | None = Field(default=None, max_length=64)
    metadata: dict[str, str] = Field(default_factory=dict)
    limits: RunLimits = Field(default_factory=RunLimits)

    @field_validator("metadata")
    @classmethod
    def _known_limits(cls, metadata: dict[str, str]) -> dict[str, str]:
        # executus.runtime_s / max_tokens / max_cost_usd (core.limits): rejected here, at the
        # door, rather than by a worker that would have to fail the run later.
        check_metadata(metadata)
        return metadata

    @classmethod
    def parse(cls, raw: str | bytes | dict[str, Any], *, max_bytes: int) -> RunRequest:
        """Validate a payload from the wire. The size and nesting caps apply before any JSON is
        parsed or encoded (see ``core.jsoncap``); every failure is a PayloadError."""
        what = "run request"
        try:
            if isinstance(raw, dict):
                dumps_capped(raw, what=what, max_bytes=max_bytes)
                return cls.model_validate(raw)
            check_text(raw, what=what, max_bytes=max_bytes)
            return validate_request_json(raw)
        except ValidationError as exc:
            raise PayloadError(f"invalid run request: {_summarise(exc)}") from exc

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)


class _LastRequest(threading.local):
    raw: bytes = b""
    request: RunRequest | None = None


_last_request = _LastRequest()


def validate_request_json(raw: str | bytes) -> RunRequest:
    """``RunRequest.model_validate_json``, reusing this thread's previous result for the same
    bytes. A delivery validates its message's request, then the claim returns the stored
    record with the same request bytes (the client stored and published one string): the
    second validation was a tenth of a no-op run's Python. The model is frozen and validation
    is a pure function of the bytes, so the result can be shared; raises ValidationError."""
    data = raw.encode() if isinstance(raw, str) else raw
    memo = _last_request
    if memo.request is not None and data == memo.raw:
        return memo.request
    request = RunRequest.model_validate_json(data)
    memo.raw, memo.request = data, request
    return request


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        loc = loc if len(loc) <= 120 else f"{loc[:117]}..."
        parts.append(f"{loc}: {err['msg'][:300]}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class RunInfo(_Strict):
    """One execution attempt of a run, as the kernel sees it."""

    run_id: RunId
    agent: AgentName
    input: dict[str, JsonValue] = Field(default_factory=dict)
    guild_id: str | None = None
    model_tier: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    limits: RunLimits = Field(default_factory=RunLimits)
    epoch: int = 0  # this attempt's claim number (for people); 0 for non-durable runs
    # The claim's fencing token: random, unique per claim, carried by every write of the
    # attempt and handed to tools (core.toolctx). Empty for non-durable runs.
    fence: str = ""
    attempt: int = 1

    @classmethod
    def from_request(
        cls,
        request: RunRequest,
        *,
        run_id: str,
        epoch: int = 0,
        attempt: int = 1,
        fence: str = "",
    ) -> RunInfo:
        # Every field comes from a validated request or is the worker's own: no second
        # validation (it was a tenth of a no-op run's Python). ``run_id`` is validated by
        # whoever read it from outside (messages.read_delivery, the API, the client).
        return cls.model_construct(
            run_id=run_id,
            agent=request.agent,
            input=request.input,
            guild_id=request.guild_id,
            model_tier=request.model_tier,
            metadata=request.metadata,
            limits=request.limits,
            epoch=epoch,
            fence=fence,
            attempt=attempt,
        )


class ToolCall(_Strict):
    id: str
    name: str
    arguments: dict[str, JsonValue] = Field(default_factory=dict)


class Message(_Strict):
    """One transcript entry. Tool results are messages with role ``tool`` and a call id."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class Checkpoint(BaseModel):
    """A run's durable state after a step.

    ``phase_start`` is the transcript length when the active phase began: a resumed phased run
    truncates back to it and re-runs the phase from its start.
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = CHECKPOINT_FORMAT_VERSION
    run_id: str
    epoch: int = 0
    iteration: int = 0
    messages: list[Message] = Field(default_factory=list)
    active_phase: str | None = None
    phase_start: int = 0
    completed_phases: list[str] = Field(default_factory=list)
    phase_outputs: dict[str, JsonValue] = Field(default_factory=dict)
    critic_state: dict[str, JsonValue] = Field(default_factory=dict)
    updated_at: float = 0.0
    # The store's marker of the last write ("<fence>:<n>"), as loaded: the next writer sends it
    # back so a write that Redis forgot (rollback, failover) is detected, never built upon.
    write_seq: str = ""


class OutcomeKind(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # shutdown: checkpoint kept for recovery
    CANCELLED = "cancelled"
    LOST = "lost"  # ownership lost: this attempt wrote nothing more; the new owner decides
    # The stored checkpoint was written by a newer format than this worker reads: the lease is
    # released, the checkpoint left untouched, and the run waits for a worker that reads it.
    PARKED = "parked"


class RunOutcome(_Strict):
    kind: OutcomeKind
    run_id: str
    output: JsonValue = None
    error: str | None = None  # one line: "ExcType: message" or "<reason>: <detail>"
    traceback: str | None = None  # bounded; kept in the record after the error line
    iterations: int = 0


class RunRecord(BaseModel):
    """The run's record in the store: the source of truth for its status."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    status: RunStatus
    agent: str
    request: RunRequest
    queue: str
    attempts: int = 0
    epoch: int = 0
    owner: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    enqueued_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    output: JsonValue = None
    error: str | None = None
    # Why the run was last taken back (lease expired, shutdown interrupt, parked), set by the
    # store.
    last_reason: str | None = None
    # Set when a worker found a checkpoint of a newer format: only a worker that reads at least
    # this format claims the run (older ones leave it queued, see checkpoint/scripts.py CLAIM).
    needs_format: int | None = None
    # Why this run must never be executed: its stored request does not decode on this version
    # (a newer client wrote it; ``request`` is then a best-effort placeholder), or it was
    # registered only to record that its first message was rejected. A claim fails it.
    request_error: str | None = None
