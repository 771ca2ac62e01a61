"""Reading an ``executus.run`` message: ``args=[run_id, request]``, tolerantly.

The wire contract (see ``executus_worker.publish``) is two positional arguments. Keyword
arguments of the same names, a request given as a dict, and a lone request that carries its
own ``run_id`` are accepted too, because other services publish with their own clients.
Nothing here trusts the message: every value is validated before it reaches the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from executus_worker.core.models import AgentName, RunId, RunRequest
from executus_worker.errors import PayloadError

_RUN_ID: TypeAdapter[str] = TypeAdapter(RunId)
_AGENT: TypeAdapter[str] = TypeAdapter(AgentName)
# A record needs *some* agent name even when the request that named it was unreadable.
UNREADABLE_AGENT = "invalid"


def split_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[object, object, str | None]:
    """(run_id, request, shape error) from ``args=[run_id, request]`` (or kwargs of the
    same names, or a lone request whose ``run_id`` field names the run)."""
    unknown = sorted(set(kwargs) - {"run_id", "request"})
    if unknown or len(args) > 2:
        extra = unknown or [f"{len(args)} positional arguments"]
        return kwargs.get("run_id"), kwargs.get("request"), f"unexpected arguments: {extra}"
    if len(args) == 2:
        return args[0], args[1], None
    if len(args) == 1:
        if "request" in kwargs:
            return args[0], kwargs["request"], None
        return kwargs.get("run_id"), args[0], None
    return kwargs.get("run_id"), kwargs.get("request"), None


def valid_run_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return _RUN_ID.validate_python(value)
    except ValidationError:
        return None


def run_id_of(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """The valid run id a message names in its arguments, if any (for logs: never trusted)."""
    return valid_run_id(split_args(args, kwargs)[0])


def parse_request(raw: object, max_bytes: int) -> RunRequest:
    if raw is None:
        raise PayloadError("the message carries no run request")
    if not isinstance(raw, str | bytes | dict):
        raise PayloadError(f"the run request must be a JSON object, got {type(raw).__name__}")
    return RunRequest.parse(raw, max_bytes=max_bytes)


def readable_agent(raw_request: object) -> str:
    """The agent an unreadable request meant, if that much is readable (for the record)."""
    data: object = raw_request
    if isinstance(raw_request, str | bytes):
        try:
            data = json.loads(raw_request)
        except ValueError:
            return UNREADABLE_AGENT
    name = data.get("agent") if isinstance(data, dict) else None
    try:
        return _AGENT.validate_python(name)
    except ValidationError:
        return UNREADABLE_AGENT
