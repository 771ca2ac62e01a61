"""Reading an ``executus.run`` message: ``args=[run_id, request]``, tolerantly.

The wire contract (see ``executus_worker.publish``) is two positional arguments. Keyword
arguments of the same names, a request given as a dict, and a lone request that carries its
own ``run_id`` are accepted too, because other services publish with their own clients.
Nothing here trusts the message: every value is validated before it reaches the store, and
no JSON is parsed before the size and nesting caps are checked (``core.jsoncap``).

``read_delivery`` never raises: a message that cannot run as sent becomes a ``Delivery`` with a
``problem``, and with the run id it names wherever one can be read (an integer run id is read
as its decimal text; failing that the request's ``run_id``; failing that the Celery task id,
which is the handle a sender of a raw ``send_task`` holds). What then happens to the run is the
handler's decision (``worker.runs``): the stored record, not the message, is the truth.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from executus_worker.core.jsoncap import MAX_DEPTH, deeper_than, loads_capped
from executus_worker.core.models import RUN_ID_CHARS, RUN_ID_MAX, AgentName, RunId, RunRequest
from executus_worker.errors import PayloadError
from executus_worker.publish import TASK_RUN, build_envelope

_RUN_ID: TypeAdapter[str] = TypeAdapter(RunId)
_AGENT: TypeAdapter[str] = TypeAdapter(AgentName)
# A record needs *some* agent name even when the request that named it was unreadable.
UNREADABLE_AGENT = "invalid"
# The keyword argument of a message the broker transport could not deliver as sent (a broken
# envelope or body, see ``transport_notice``): its value says what was wrong.
REJECTED = "executus_rejected"
_KWARGS = frozenset({"run_id", "request", REJECTED})
# The broker transport option (set by the factory from EXECUTUS_MAX_PAYLOAD_BYTES) that caps a
# run message's body before Celery's JSON decoder sees it (see ``run_body_problem``).
MAX_PAYLOAD_OPTION = "executus_max_payload_bytes"


@dataclass(frozen=True)
class Delivery:
    """What one ``executus.run`` message says."""

    run_id: str | None  # the run it names, if any can be read
    request: RunRequest | None  # the validated request; None when ``problem`` is set
    problem: str | None = None  # why the message cannot run as sent
    agent: str = UNREADABLE_AGENT  # the agent it meant, for the record of a run failed on sight


def read_delivery(
    args: Sequence[Any], kwargs: Mapping[str, Any], *, task_id: str | None, max_bytes: int
) -> Delivery:
    raw_run_id, raw_request, problem = split_args(args, kwargs)
    run_id, id_problem = read_run_id(raw_run_id)
    problem = problem or id_problem
    request: RunRequest | None = None
    if problem is None:
        try:
            request = parse_request(raw_request, max_bytes)
        except PayloadError as exc:
            problem = str(exc)
    if request is not None:
        if run_id is not None and request.run_id not in {None, run_id}:
            problem = f"run id {run_id!r} does not match the request's ({request.run_id!r})"
            request = None
        else:
            return Delivery(run_id or request.run_id or read_run_id(task_id)[0], request)
    fields = readable_fields(raw_request, max_bytes)
    run_id = run_id or read_run_id(fields.get("run_id"))[0] or read_run_id(task_id)[0]
    return Delivery(run_id, None, problem or "unreadable message", readable_agent(fields))


def split_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[object, object, str | None]:
    """(run_id, request, shape problem) from ``args=[run_id, request]`` (or kwargs of the
    same names, or a lone request whose ``run_id`` field names the run)."""
    if REJECTED in kwargs:
        problem = f"malformed message: {str(kwargs[REJECTED])[:500]}"
        return (args[0] if args else kwargs.get("run_id")), None, problem
    unknown = sorted(set(kwargs) - _KWARGS)
    if unknown or len(args) > 2:
        extra = unknown or [f"{len(args)} positional arguments"]
        first = args[0] if args else kwargs.get("run_id")
        return first, kwargs.get("request"), f"unexpected arguments: {extra}"
    if len(args) == 2:
        return args[0], args[1], None
    if len(args) == 1:
        if "request" in kwargs:
            return args[0], kwargs["request"], None
        return kwargs.get("run_id"), args[0], None
    return kwargs.get("run_id"), kwargs.get("request"), None


def read_run_id(value: object) -> tuple[str | None, str | None]:
    """(run id, problem). An integer is read as its decimal text -- a usable id, but a problem:
    the contract says string, and the sender will look the run up by that text."""
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        found = valid_run_id(text)
        return found, f"run id must be a string, got the number {text[:40]}"
    found = valid_run_id(value)
    if found is None:
        return None, f"invalid run id {str(value)[:80]!r}"
    return found, None


def valid_run_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return _RUN_ID.validate_python(value)
    except ValidationError:
        return None


# What ``RunId`` accepts (core.models), as a regex: a run id the wire contract's shape carries
# is read on every delivery's path to its claim, where the validator costs several times more.
_RUN_ID_TEXT = re.compile(f"[{RUN_ID_CHARS}]{{1,{RUN_ID_MAX}}}")


def run_id_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The valid run id a message names in its arguments, if any: the id ``read_delivery``
    reads (the claim sent ahead relies on it, ``runtime.claim_ahead``)."""
    if not kwargs and len(args) == 2:  # the wire contract: [run_id, request]
        first = args[0]
        if isinstance(first, str) and _RUN_ID_TEXT.fullmatch(first):
            return first
    return read_run_id(split_args(args, kwargs)[0])[0]


def parse_request(raw: object, max_bytes: int) -> RunRequest:
    if raw is None:
        raise PayloadError("the message carries no run request")
    if not isinstance(raw, str | bytes | dict):
        raise PayloadError(f"the run request must be a JSON object, got {type(raw).__name__}")
    return RunRequest.parse(raw, max_bytes=max_bytes)


def readable_fields(raw_request: object, max_bytes: int) -> Mapping[str, Any]:
    """The top-level fields of a request that did not validate, if it is a (capped) object."""
    data: object = raw_request
    if isinstance(raw_request, str | bytes):
        try:
            data = loads_capped(raw_request, what="run request", max_bytes=max_bytes)
        except PayloadError:
            return {}
    return data if isinstance(data, dict) else {}


def readable_agent(fields: Mapping[str, Any]) -> str:
    """The agent an unreadable request meant, if that much is readable (for the record)."""
    try:
        return _AGENT.validate_python(fields.get("agent"))
    except ValidationError:
        return UNREADABLE_AGENT


# --------------------------------------------------------------------------- at the transport

# Room for the body around the request: ``[[run_id, "<request as an escaped JSON string>"], {},
# embed]``. Escaping can grow a request up to ~3x (a 4-byte UTF-8 character becomes a 12-byte
# surrogate pair); the exact cap is applied to the request itself by the handler.
_BODY_SIZE_FACTOR = 4
_BODY_SLACK_BYTES = 64 * 1024
# The body, its argument list and (dict form) the request add three levels to the request's.
_BODY_DEPTH = MAX_DEPTH + 3
# args[0] of a body, read without parsing the body: '[["run-1", ...' or '[[42, ...'.
_FIRST_ARG = re.compile(
    rb'\A\s*\[\s*\[\s*(?:"([%b]{1,%d})"|(-?\d{1,30}))\s*[,\]]' % (RUN_ID_CHARS.encode(), RUN_ID_MAX)
)


def body_problem(body: bytes, *, max_bytes: int) -> str | None:
    """Why a decoded ``executus.run`` body must not reach Celery's JSON decoder (too big to be
    within the request cap, or nested deep enough to make ``json.loads`` recurse)."""
    limit = max_bytes * _BODY_SIZE_FACTOR + _BODY_SLACK_BYTES
    if len(body) > limit:
        return f"message body is {len(body)} bytes, over the {limit}-byte limit"
    if deeper_than(body, _BODY_DEPTH):
        return f"message body nests deeper than {_BODY_DEPTH} levels"
    return None


def decoded_body(message: Mapping[str, Any]) -> bytes | None:
    """A kombu envelope's body as bytes (base64-decoded when so encoded), None if unreadable."""
    body = message.get("body")
    properties = message.get("properties")
    if isinstance(body, str):
        if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
            try:
                return base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                return None
        return body.encode()
    return body if isinstance(body, bytes) else None


def run_body_problem(message: object, *, max_bytes: int) -> str | None:
    """``body_problem`` of an ``executus.run`` envelope whose body is readable, else None
    (what else is wrong with an envelope is the transport's ``envelope_problem``)."""
    if not isinstance(message, dict) or not _is_run_task(message):
        return None
    body = decoded_body(message)
    return None if body is None else body_problem(body, max_bytes=max_bytes)


def transport_notice(message: object, problem: str, queue: str) -> dict[str, Any] | None:
    """What the transport delivers instead of a broken ``executus.run`` message that names a
    run: a well-formed message for that run carrying only ``problem`` (the ``REJECTED``
    keyword), so the handler applies the usual rule -- a run that exists is merely woken, a run
    seen for the first time is recorded failed with the reason. None: nothing names a run."""
    if not isinstance(message, dict) or not _is_run_task(message):
        return None
    run_id = notice_run_id(message)
    if run_id is None:
        return None
    headers = message["headers"]
    task_id = headers["id"] if valid_run_id(headers.get("id")) else None
    envelope = build_envelope(
        TASK_RUN, [run_id], queue=queue, task_id=task_id, kwargs={REJECTED: problem[:500]}
    )
    notice: dict[str, Any] = json.loads(envelope)
    return notice


def _is_run_task(message: Mapping[str, Any]) -> bool:
    headers = message.get("headers")
    return isinstance(headers, dict) and headers.get("task") == TASK_RUN


def notice_run_id(message: Mapping[str, Any]) -> str | None:
    """The run a broken ``executus.run`` message names: its first argument (read from the
    body's first bytes, never by parsing the body), else its task id."""
    run_id = first_arg_run_id(message)
    if run_id is not None:
        return run_id
    headers = message.get("headers")
    return valid_run_id(headers.get("id")) if isinstance(headers, dict) else None


def first_arg_run_id(message: Mapping[str, Any]) -> str | None:
    """The valid run id an ``executus.run`` envelope's first argument names, read from the
    body's first bytes without parsing the body; None if it names none."""
    body = decoded_body(message)
    found = _FIRST_ARG.match(body[:512]) if body else None
    if found is None:
        return None
    return valid_run_id((found.group(1) or found.group(2)).decode())
