"""Publish ``executus.run`` messages straight onto the kombu Redis transport, many per round trip.

Why not ``app.send_task``: it costs ~0.7 ms per message (kombu producer, routing, one Redis
round trip each; measured in shared/research/celery-shutdown.md §7), so re-publishing 10,000
recovered runs would take ~9 s. The recovery sweep needs well under a second, so this module
builds the exact message Celery would write and pipelines the LPUSHes, one round trip per batch.

The wire format (Celery task protocol 2, JSON serializer, kombu Redis transport, default
exchange, priority 0) -- what ``celery worker`` consumes and what other languages may write:

    LPUSH <global_keyprefix><queue> <envelope JSON>

    envelope = {"body": base64(JSON([args, {}, embed])), "content-encoding": "utf-8",
                "content-type": "application/json", "headers": {... "task": "executus.run",
                "id": <run_id> ...}, "properties": {"body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": <queue>}, ...}}
    args     = [run_id, request]   # request: the validated RunRequest as a JSON string

The task id is the run id, on every message of a run (first publish and every recovery): Celery's
tools then name runs by their id (``celery control revoke <run_id>``), and a sender's
``AsyncResult(run_id)`` follows the run through its interruptions to its ending.

The message carries the run id and the request only, never a transcript: state lives in the run
record, and the worker re-validates the request (it never trusts the wire).
Nothing here connects at construction; the first publish does. Publishing through whatever
broker the settings name (Redis here, RabbitMQ through kombu): ``broker_publish``.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import socket
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from executus_worker.checkpoint import resp

TASK_RUN = "executus.run"
TASK_RECOVER = "executus.recover"
DEFAULT_BATCH_SIZE = 1000
# One LPUSH carries at most this many bytes of envelopes (or one envelope): Redis executes a
# command whole, and pushing a thousand 64 KB requests at once would hold it for tens of ms.
MAX_PUSH_BYTES = 1 << 20

# Celery's protocol-2 "embed" element: no callbacks, no chain, no chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMBED_JSON = json.dumps(_EMBED, separators=(",", ":"))
# json.dumps with separators= builds a new encoder per call; one encoder, built once, is ~3x
# cheaper for the small values here (a recovery sweep renders 100,000 envelopes). A lone string
# goes straight to the C quoting json.dumps uses for it.
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode
_quote = json.encoder.encode_basestring_ascii


@dataclass(frozen=True)
class RunMessage:
    """One ``executus.run`` message to publish."""

    run_id: str
    request_json: str
    queue: str


def build_envelope(
    task: str,
    args: Sequence[Any],
    *,
    queue: str,
    task_id: str | None = None,
    origin: str = "",
    ignore_result: bool = True,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """The kombu/Celery message JSON for one task, exactly as ``send_task`` would LPUSH it."""
    extra = _COMPACT(kwargs) if kwargs else "{}"
    body = "[" + _COMPACT(list(args)) + "," + extra + "," + _EMBED_JSON + "]"
    template = _template(task, queue, origin, ignore_result)
    return _render(template, body, list(args[:1]), task_id or _unique_id(), _unique_id())


def _render(template: str, body: str, first: list[Any], task_id: str, tag: str) -> str:
    return template % {
        "id": _quote(task_id),
        "body": '"' + base64.b64encode(body.encode()).decode("ascii") + '"',
        # What the worker logs and shows in `inspect`: the run id, never the request (it may
        # carry user content).
        "argsrepr": _quote(repr(first)),
        "tag": _quote(tag),
    }


def _run_envelope(template: str, run_id: str, request_json: str, tag: str) -> bytes:
    """``build_envelope(TASK_RUN, [run_id, request_json], task_id=run_id, ...)`` on the hot
    path: the body is two JSON strings. The task id is the run id; the delivery tag must be
    unique per message (kombu keys its unacked messages by it, and a run can have two messages
    in flight), so it is the one random id a message costs."""
    body = "[[" + _quote(run_id) + "," + _quote(request_json) + "],{}," + _EMBED_JSON + "]"
    return _render(template, body, [run_id], run_id, tag).encode()


def _unique_id() -> str:
    """A random UUID-shaped id from the OS RNG: 5x cheaper than ``str(uuid.uuid4())``, and
    still unique across forked processes (which share any userspace RNG state)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _unique_ids(n: int) -> list[str]:
    """``n`` ids like ``_unique_id``, from one read of the OS RNG (a read costs ~4 us here)."""
    h = os.urandom(16 * n).hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


@functools.lru_cache(maxsize=64)
def _template(task: str, queue: str, origin: str, ignore_result: bool) -> str:
    """The envelope rendered once per (task, queue) as a %-format string with named slots.

    Rendering the whole dict with json.dumps per message was most of the cost of a 10,000-run
    recovery (~25 us of ~40 us per message); filling four slots into cached text is not.
    """
    slot = {name: f"@@{name}@@" for name in ("id", "body", "argsrepr", "tag")}
    envelope = {
        "body": slot["body"],
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": slot["id"],
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": slot["id"],
            "parent_id": None,
            "argsrepr": slot["argsrepr"],
            "kwargsrepr": "{}",
            "origin": origin,
            "ignore_result": ignore_result,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": slot["id"],
            "reply_to": None,
            "delivery_mode": 2,  # persistent
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,  # kombu maps priority 0 to the bare queue key
            "body_encoding": "base64",
            "delivery_tag": slot["tag"],
        },
    }
    rendered = json.dumps(envelope, separators=(",", ":"))
    pieces = re.split(r'"@@(id|body|argsrepr|tag)@@"', rendered)
    # re.split alternates literal text and captured slot names.
    return "".join(
        piece.replace("%", "%%") if i % 2 == 0 else f"%({piece})s" for i, piece in enumerate(pieces)
    )


class BatchPublisher:
    """Pipelines ``executus.run`` messages onto the broker: one Redis round trip per batch.

    ``global_keyprefix`` must equal the transport option of the same name the workers use
    (we set none by default); otherwise the messages land on a list no worker reads.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        global_keyprefix: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        ignore_result: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._client = client
        # False when the workers store results (EXECUTUS_RESULT_BACKEND): the message header
        # overrides the task's own setting.
        self._ignore_result = ignore_result
        self._keyprefix = global_keyprefix
        self._batch_size = batch_size
        self._origin = f"{os.getpid()}@{socket.gethostname()}"

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        self.publish_many([RunMessage(run_id, request_json, queue)])

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (not those a worker reserved): the recovery sweep's
        backlog signal. Our messages go out at priority 0, which kombu keeps in the bare list."""
        return int(self._client.llen(self._keyprefix + queue))

    def publish_many(self, messages: Iterable[RunMessage]) -> int:
        """Publish every message; returns how many. Raises redis errors (nothing is retried:
        a run whose message was lost stays ``queued`` and the sweep re-publishes it)."""
        return sum(self._flush(batch) for batch in batches(messages, self._batch_size))

    def envelope(self, message: RunMessage) -> tuple[str, bytes]:
        """The list and the envelope a publish of ``message`` would push: for a caller that
        pushes it itself, inside a script (the client's one-round-trip enqueue)."""
        (tag,) = _unique_ids(1)
        template = _template(TASK_RUN, message.queue, self._origin, self._ignore_result)
        envelope = _run_envelope(template, message.run_id, message.request_json, tag)
        return self._keyprefix + message.queue, envelope

    def same_server(self, client: object) -> bool:
        """True if ``client`` talks to the Redis server and database this publisher pushes to
        (then a script on ``client`` may push the message itself)."""
        mine = getattr(self._client, "connection_pool", None)
        theirs = getattr(client, "connection_pool", None)
        if mine is None or theirs is None:
            return False
        if mine is theirs:
            return True
        keys = ("host", "port", "db", "path")
        a, b = mine.connection_kwargs, theirs.connection_kwargs
        if not (a.get("host") or a.get("path")):
            return False  # resolved per connection (Sentinel): not provably the same
        return type(mine) is type(theirs) and all(a.get(k) == b.get(k) for k in keys)

    def _flush(self, batch: list[RunMessage]) -> int:
        by_queue: dict[str, list[bytes]] = defaultdict(list)
        for message, tag in zip(batch, _unique_ids(len(batch)), strict=True):
            template = _template(TASK_RUN, message.queue, self._origin, self._ignore_result)
            envelope = _run_envelope(template, message.run_id, message.request_json, tag)
            by_queue[message.queue].append(envelope)
        # Multi-value LPUSHes of at most MAX_PUSH_BYTES each, all sent at once: a single round
        # trip. LPUSH inserts left to right and kombu pops from the right, so the batch is
        # consumed in the order given. Packed by hand (checkpoint/resp.py): redis-py's
        # per-argument packing was a fifth of a sweep's publishing time.
        pushes = [
            resp.command(b"LPUSH", (self._keyprefix + queue).encode(), *chunk)
            for queue, envelopes in by_queue.items()
            for chunk in _chunks(envelopes, MAX_PUSH_BYTES)
        ]
        for reply in resp.send_packed(self._client, b"".join(pushes), len(pushes)):
            if isinstance(reply, Exception):
                raise reply
        return len(batch)


def batches(messages: Iterable[RunMessage], size: int) -> Iterator[list[RunMessage]]:
    """``messages`` in consecutive lists of at most ``size`` (every publisher's batching)."""
    batch: list[RunMessage] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _chunks(items: Sequence[bytes], max_bytes: int) -> list[Sequence[bytes]]:
    """Consecutive runs of ``items`` of at most ``max_bytes``, each holding at least one."""
    out: list[Sequence[bytes]] = []
    start = size = 0
    for i, item in enumerate(items):
        if i > start and size + len(item) > max_bytes:
            out.append(items[start:i])
            start, size = i, 0
        size += len(item)
    if start < len(items):
        out.append(items[start:])
    return out
