"""JSON encoding of run records, checkpoint meta and messages. JSON only: never pickle.

Decoding is where stored bytes meet code, so every failure becomes a typed error naming the
run and the key (``CorruptCheckpointError``, ``UnsupportedFormatError``); a raw
``ValidationError`` or ``JSONDecodeError`` never escapes this module.

The transcript is decoded in one go. In Redis it is stored as one string that is always a
complete JSON array of compact messages, ``[m1\\n,m2\\n,m3]`` (compact JSON never holds a raw
newline, so ``"\\n,"`` marks message boundaries for the rare truncation). A load is one GET and
one ``validate_json`` on the reply as is, the same cost as reading the transcript stored as one
JSON value (the DESIGN target for resume); a save writes ``"\\n,<new>]"`` over the closing
bracket (SETRANGE), O(new messages). Measured alternatives (bench/RESULTS.md): a Redis list
read with LRANGE costs ~2x, because redis-py parses N bulk strings; joining the list in Lua ~3x.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Json, JsonValue, TypeAdapter, ValidationError

from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    Message,
    RunLimits,
    RunRecord,
    RunRequest,
    RunStatus,
    validate_request_json,
)
from executus_worker.errors import CorruptCheckpointError, UnsupportedFormatError

Raw = bytes | str

_MESSAGES: TypeAdapter[list[Message]] = TypeAdapter(list[Message])
SEPARATOR = "\n,"
# The agent name a record shows when its request does not even say which agent it meant.
UNREADABLE_AGENT = "invalid"


class _Meta(BaseModel):
    """The checkpoint meta hash as stored: scalars as text, structures as JSON text."""

    model_config = ConfigDict(extra="ignore")

    format_version: int
    epoch: int = 0
    iteration: int = 0
    active_phase: Json[str | None] = None
    phase_start: int = 0
    completed_phases: Json[list[str]] = []
    phase_outputs: Json[dict[str, JsonValue]] = {}
    critic_state: Json[dict[str, JsonValue]] = {}
    updated_at: float = 0.0
    msg_count: int | None = None
    wseq: str = ""


def text(value: Raw) -> str:
    return value.decode() if isinstance(value, bytes) else value


def text_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    """A Redis hash reply (bytes or str, depending on the client) as ``dict[str, str]``."""
    # ``text`` inlined: a claim decodes a record of ~30 fields on every run's path.
    return {
        (k.decode() if k.__class__ is bytes else k): (v.decode() if v.__class__ is bytes else v)
        for k, v in raw.items()
    }


def dumps(value: JsonValue) -> str:
    """Compact JSON for a JSON value (outputs, phase outputs, critic state)."""
    return pydantic_core.to_json(value).decode()


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        more = exc.error_count() - 1
        return f"{loc}: {err['msg']}" + (f" (+{more} more)" if more else "")
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- messages


def encode_message(message: Message) -> str:
    # Defaults are left out: most messages carry only a role and content, and every byte is
    # written once per step and read back on every resume.
    return message.model_dump_json(exclude_defaults=True)


def encode_messages(messages: Sequence[Message]) -> list[str]:
    return [encode_message(m) for m in messages]


def append_payload(messages: Sequence[Message], *, base_len: int) -> str:
    """What a save writes after the first ``base_len`` stored messages ("" for none): a whole
    array when nothing is kept, else the tail that replaces the closing bracket."""
    if not messages:
        return ""
    body = SEPARATOR.join(encode_message(m) for m in messages)
    return f"{SEPARATOR}{body}]" if base_len > 0 else f"[{body}]"


def stored_array(value: Raw | None) -> Raw:
    """The stored transcript (None when there are no messages) as a JSON array, uncopied."""
    return value if value else b"[]"


def join_items(items: Sequence[Raw]) -> bytes:
    """Separately stored messages (MemoryStore) -> one JSON array, ready for a single parse."""
    return b"[" + b",".join(i.encode() if isinstance(i, str) else i for i in items) + b"]"


def decode_messages(run_id: str, key: str, array_json: Raw) -> list[Message]:
    """Parse a JSON array of messages (``join_items`` output, or the joined Lua reply)."""
    try:
        return _MESSAGES.validate_json(array_json)
    except ValidationError as exc:
        raise CorruptCheckpointError(
            run_id, f"unreadable transcript at {key}: {_why(exc)}"
        ) from exc


# --------------------------------------------------------------------------- records


def record_fields(
    request: RunRequest, *, run_id: str, queue: str, now: float, rejected: str | None = None
) -> dict[str, str]:
    """The hash fields of a freshly registered run (``rejected``: see RunStore.register)."""
    stamp = repr(now)
    rejection = {} if rejected is None else {"rejected": rejected}
    return rejection | {
        "run_id": run_id,
        "status": RunStatus.QUEUED.value,
        "agent": request.agent,
        "request": request.to_json(),
        "queue": queue,
        "attempts": "0",
        "epoch": "0",
        "interrupts": "0",
        "cancel_requested": "0",
        "created_at": stamp,
        "updated_at": stamp,
        "enqueued_at": stamp,
    }


def decode_record(run_id: str, key: str, raw: Mapping[Any, Any]) -> RunRecord:
    """A record hash -> RunRecord. Unknown hash fields (internal counters) are ignored.

    A stored request that is JSON but does not validate here (a newer client added a field)
    still gives a readable record: ``request`` is then a placeholder and ``request_error`` says
    why, so ``status`` shows the run and the worker that claims it fails it with that reason.
    """
    fields = text_map(raw)
    try:
        data: dict[str, Any] = dict(fields)
        data["request"], data["request_error"] = _stored_request(run_id, key, fields["request"])
        if "rejected" in fields:
            data["request_error"] = fields["rejected"]
        if "output" in fields:
            # pydantic's parser: an output nested past json.loads' recursion is a ValueError.
            try:
                data["output"] = pydantic_core.from_json(fields["output"])
            except ValueError as exc:
                raise ValueError(f"output: {exc}") from exc
        return RunRecord.model_validate(data)
    except (KeyError, ValueError) as exc:  # ValidationError and JSONDecodeError are ValueErrors
        raise CorruptCheckpointError(
            run_id, f"unreadable run record at {key}: {_why(exc)}"
        ) from exc


def decode_request(run_id: str, key: str, raw: Raw) -> RunRequest:
    """The stored request, or the placeholder of ``decode_record`` when it does not validate
    on this version (republishing it is harmless: the claim reads the record and fails the run
    with the reason). Raises CorruptCheckpointError only for bytes that are not a JSON object.
    """
    return _stored_request(run_id, key, raw)[0]


def _stored_request(run_id: str, key: str, raw: Raw) -> tuple[RunRequest, str | None]:
    try:
        return validate_request_json(raw), None
    except ValidationError as exc:
        problem = _why(exc)
    try:
        # pydantic's parser, not json.loads: it has its own nesting limit (no RecursionError).
        data = pydantic_core.from_json(raw)
    except ValueError as exc:
        raise CorruptCheckpointError(run_id, f"unreadable request at {key}: {problem}") from exc
    if not isinstance(data, dict):
        raise CorruptCheckpointError(run_id, f"request at {key} is not a JSON object")
    why = (
        f"the stored request does not validate on this worker ({problem}): written by a "
        "newer client? Upgrade the workers"
    )
    return _placeholder(data), why


def _placeholder(data: dict[str, Any]) -> RunRequest:
    """What can be read of a request this version does not accept: the fields it knows (for
    ``status``), or only its agent and run id. Never executed (see decode_record)."""
    known = {k: v for k, v in data.items() if k in RunRequest.model_fields}
    known.pop("schema_version", None)
    if isinstance(known.get("limits"), dict):
        known["limits"] = {k: v for k, v in known["limits"].items() if k in RunLimits.model_fields}
    minimal = {"agent": data.get("agent"), "run_id": data.get("run_id")}
    for candidate in (known, minimal):
        try:
            return RunRequest.model_validate(candidate)
        except ValidationError:
            continue
    return RunRequest(agent=UNREADABLE_AGENT)


# --------------------------------------------------------------------------- checkpoint meta


def meta_fields(checkpoint: Checkpoint, *, epoch: int, now: float) -> dict[str, str]:
    """The checkpoint meta hash (everything but the messages, which live in their own list)."""
    return MetaDelta().fields(checkpoint, epoch=epoch, now=now)


# Meta fields that hold structures; compared by value, encoded only when they changed.
_STRUCTURED = ("active_phase", "completed_phases", "phase_outputs", "critic_state")


class MetaDelta:
    """The meta fields that changed since the last write this object was told about.

    A step usually changes only ``iteration`` and ``updated_at``: sending (and JSON-encoding)
    the other seven fields every step was a third of the client-side cost of a save
    (bench/step_bench.py --profile). ``fields`` returns the full set on the first call and
    after ``reset``; the writer calls ``written`` once the store accepted them.
    """

    def __init__(self) -> None:
        self._sent: dict[str, object] = {}
        self._pending: dict[str, object] = {}

    def reset(self) -> None:
        self._sent = {}

    def fields(self, checkpoint: Checkpoint, *, epoch: int, now: float) -> dict[str, str]:
        values: dict[str, object] = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "epoch": epoch,
            "iteration": checkpoint.iteration,
            "active_phase": checkpoint.active_phase,
            "phase_start": checkpoint.phase_start,
            "completed_phases": checkpoint.completed_phases,
            "phase_outputs": checkpoint.phase_outputs,
            "critic_state": checkpoint.critic_state,
        }
        sent, out, pending = self._sent, {}, {}
        for name, value in values.items():
            if name in sent and sent[name] == value:
                continue
            if name in _STRUCTURED:
                out[name] = dumps(value)  # type: ignore[arg-type]
                pending[name] = json.loads(out[name])  # a private copy, immune to mutation
            else:
                out[name] = str(value)
                pending[name] = value
        out["updated_at"] = repr(now)
        self._pending = pending
        return out

    def written(self) -> None:
        self._sent.update(self._pending)
        self._pending = {}


def decode_checkpoint(
    run_id: str,
    *,
    meta_key: str,
    msgs_key: str,
    meta: Mapping[Any, Any],
    messages_json: Raw,
) -> Checkpoint:
    """Meta hash + the transcript as one JSON array -> Checkpoint (one parse per part)."""
    fields = text_map(meta)
    raw_version = fields.get("format_version")
    try:
        version = int(raw_version) if raw_version is not None else -1
    except ValueError:
        version = -1
    if version < 1:
        raise CorruptCheckpointError(
            run_id, f"checkpoint meta at {meta_key} has no valid format_version ({raw_version!r})"
        )
    if version > CHECKPOINT_FORMAT_VERSION:
        raise UnsupportedFormatError(
            run_id,
            f"checkpoint at {meta_key} has format version {version}; this code reads up to "
            f"{CHECKPOINT_FORMAT_VERSION} (upgrade the worker)",
            version=version,
        )
    try:
        parsed = _Meta.model_validate(fields)
    except ValidationError as exc:
        raise CorruptCheckpointError(
            run_id, f"unreadable checkpoint meta at {meta_key}: {_why(exc)}"
        ) from exc
    messages = decode_messages(run_id, msgs_key, messages_json)
    if parsed.msg_count is not None and parsed.msg_count != len(messages):
        raise CorruptCheckpointError(
            run_id,
            f"{msgs_key} holds {len(messages)} messages but {meta_key} counts {parsed.msg_count}",
        )
    # Every part was validated above; constructing skips a second walk over the messages.
    return Checkpoint.model_construct(
        format_version=parsed.format_version,
        run_id=run_id,
        epoch=parsed.epoch,
        iteration=parsed.iteration,
        messages=messages,
        active_phase=parsed.active_phase,
        phase_start=parsed.phase_start,
        completed_phases=parsed.completed_phases,
        phase_outputs=parsed.phase_outputs,
        critic_state=parsed.critic_state,
        updated_at=parsed.updated_at,
        write_seq=parsed.wseq,
    )
