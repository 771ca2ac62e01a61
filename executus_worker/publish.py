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
                "id": <uuid> ...}, "properties": {"body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": <queue>}, ...}}
    args     = [run_id, request_json]   # request_json: the validated RunRequest as a JSON string

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

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
# cheaper for the small values here (a recovery sweep renders 100,000 envelopes).
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


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
) -> str:
    """The kombu/Celery message JSON for one task, exactly as ``send_task`` would LPUSH it."""
    # A generated id is hex and dashes: nothing to escape.
    quoted_id = _COMPACT(task_id) if task_id else '"' + _unique_id() + '"'
    body = "[" + _COMPACT(list(args)) + ",{}," + _EMBED_JSON + "]"
    values = {
        "id": quoted_id,
        "body": '"' + base64.b64encode(body.encode()).decode("ascii") + '"',
        # What the worker logs and shows in `inspect`: the run id, never the request (it may
        # carry user content).
        "argsrepr": _COMPACT(repr(list(args[:1]))),
        "tag": '"' + _unique_id() + '"',
    }
    text, slots = _template(task, queue, origin, ignore_result)
    return text % tuple(values[name] for name in slots)


def _unique_id() -> str:
    """A random UUID-shaped id from the OS RNG: 5x cheaper than ``str(uuid.uuid4())``, and
    still unique across forked processes (which share any userspace RNG state)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=64)
def _template(
    task: str, queue: str, origin: str, ignore_result: bool
) -> tuple[str, tuple[str, ...]]:
    """The envelope rendered once per (task, queue) as a %-format string, and the names of its
    per-message slots in order.

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
    text = "%s".join(p.replace("%", "%%") for p in pieces[0::2])
    return text, tuple(pieces[1::2])


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
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._client = client
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
        count = 0
        batch: list[RunMessage] = []
        for message in messages:
            batch.append(message)
            if len(batch) >= self._batch_size:
                count += self._flush(batch)
                batch = []
        if batch:
            count += self._flush(batch)
        return count

    def _flush(self, batch: list[RunMessage]) -> int:
        by_queue: dict[str, list[str]] = defaultdict(list)
        for message in batch:
            by_queue[message.queue].append(
                build_envelope(
                    TASK_RUN,
                    [message.run_id, message.request_json],
                    queue=message.queue,
                    origin=self._origin,
                )
            )
        # Multi-value LPUSHes of at most MAX_PUSH_BYTES each, all in one non-transactional
        # pipeline: a single round trip. LPUSH inserts left to right and kombu pops from the
        # right, so the batch is consumed in the order given.
        pipe = self._client.pipeline(transaction=False)
        for queue, envelopes in by_queue.items():
            for chunk in _chunks(envelopes, MAX_PUSH_BYTES):
                pipe.lpush(self._keyprefix + queue, *chunk)
        pipe.execute()
        return len(batch)


def _chunks(items: Sequence[str], max_bytes: int) -> list[Sequence[str]]:
    """Consecutive runs of ``items`` of at most ``max_bytes`` (characters, as envelopes are
    ASCII: base64 and JSON), each holding at least one item."""
    out: list[Sequence[str]] = []
    start = size = 0
    for i, item in enumerate(items):
        if i > start and size + len(item) > max_bytes:
            out.append(items[start:i])
            start, size = i, 0
        size += len(item)
    if start < len(items):
        out.append(items[start:])
    return out
