"""kombu's Redis transport, hardened: an undecodable item on a queue list is dropped, not fatal.

Stock kombu 5.7 decodes each popped list item with ``json.loads`` and builds a message from
its ``properties`` before Celery sees it. Anything else -- a stray ``LPUSH`` of plain text, a
JSON value without the envelope's fields, a body that is not base64 -- raises out of the
consumer loop and Celery stops the worker with "Unrecoverable error" (measured in
tests/e2e/test_delivery.py). One bad producer must not take down every worker on the queue.

Only the envelope is checked here; a well-formed envelope with a bad *task* body is left to
Celery (it logs and acks it) and to our task (which validates its arguments). The item is
already popped when it is found bad, so dropping it loses nothing that could be delivered.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from queue import Empty  # what kombu's channels raise for 'nothing to read'
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


def envelope_problem(message: object) -> str | None:
    """Why ``message`` cannot be delivered as a kombu message, or None if it can."""
    if not isinstance(message, dict):
        return f"a JSON {type(message).__name__}, not an object"
    properties = message.get("properties")
    if not isinstance(properties, dict):
        return "no properties object"
    checks = (
        (isinstance(properties.get("delivery_tag"), str), "no delivery_tag"),
        (isinstance(properties.get("delivery_info", {}), dict), "delivery_info is not an object"),
        (isinstance(message.get("headers") or {}, dict), "headers is not an object"),
        (_body(message.get("body"), properties) is not _BAD, "body is not valid base64"),
    )
    problem = next((problem for ok, problem in checks if not ok), None)
    if problem is None and "task" in (message.get("headers") or {}):
        problem = _task_problem(message)
    return problem


_BAD = object()


def _body(body: object, properties: dict[str, Any]) -> object:
    """The body as bytes, or _BAD when its base64 does not decode."""
    if not body or properties.get("body_encoding") != "base64":
        return body
    if not isinstance(body, str):
        return _BAD
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return _BAD


def _task_problem(message: dict[str, Any]) -> str | None:
    """Celery task protocol 2: headers name the task and id; a JSON body is
    ``[args, kwargs, embed]``. Celery unpacks that body outside any error handling."""
    headers = message["headers"]
    if not isinstance(headers.get("task"), str) or not isinstance(headers.get("id"), str):
        return "task message without a task name and id"
    if message.get("content-type") != "application/json":
        return None  # Celery refuses content types it does not accept, and survives that
    raw = _body(message.get("body"), message["properties"])
    try:
        body = json.loads(raw) if isinstance(raw, str | bytes) else raw
    except ValueError:
        return None  # undecodable JSON: Celery reports it as a decode error and survives
    shape_ok = (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and isinstance(body[1], dict)
        and isinstance(body[2], dict | None)
    )
    return None if shape_ok else "task body is not [args, kwargs, embed]"


def _describe(message: object) -> str:
    # Enough to find the producer, never the whole payload (it may carry user content).
    text = message if isinstance(message, str) else json.dumps(message, default=str)
    return text[:120] + ("..." if len(text) > 120 else "")


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        try:
            # kombu-stubs omit this private method; it is the one place an item is decoded.
            result: bool = super()._brpop_read(**options)  # type: ignore[misc]
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            log.error("dropped a broker item that is not JSON (%s)", exc)
            raise Empty() from exc
        return result


class Transport(kombu_redis.Transport):
    Channel = Channel

    def _deliver(self, message: Any, queue: str | None) -> None:
        problem = envelope_problem(message)
        if problem is not None:
            log.error(
                "dropped a malformed message on queue %s (%s): %s",
                queue,
                problem,
                _describe(message),
            )
            return
        super()._deliver(message, queue)
