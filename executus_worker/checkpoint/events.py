"""Run events in Redis: one bounded stream per run, with a TTL (what the audit battery writes and
``Client.events`` / ``executus-worker events`` read).

Each event is one stream entry ``{event, ts, data}`` (``data`` is a JSON object) in
``<prefix>:{run:<id>}:events``, next to the run's other keys (same hash tag, same Cluster slot).
A write is ``XADD MAXLEN ~ <maxlen>`` plus ``PEXPIRE`` in one script call: the stream stays
bounded however long a run lives (approximate trimming costs O(1) amortised), and it expires
``ttl_s`` after the run's last event, so a finished run leaves no key without a TTL.

Events are observations, never the source of truth (that is the run record): a write that
fails is logged and dropped by the writers here, and the run goes on.

The worker's audit battery (``batteries.audit.StreamAudit``) calls ``append_many`` from a
background writer, a batch of several runs' events per round trip.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import redis
from pydantic import BaseModel, ConfigDict, JsonValue

from executus_worker.checkpoint import hotpath
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.core.ports import AuditEvent
from executus_worker.errors import StoreError
from executus_worker.redis_connect import StateClient

log = logging.getLogger(__name__)

DEFAULT_MAXLEN = 1000
DEFAULT_TTL_S = 86_400

# One run's events: XADD each (trimmed to about maxlen), then one PEXPIRE -- after the XADDs,
# because an XADD creates a missing stream without a TTL. One script call costs the client
# about half the CPU of the same commands pipelined (measured with redis-py: 121 vs 269 us
# for three events), and a no-op run writes two batches.
_APPEND = """
for i = 3, #ARGV, 3 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
             'event', ARGV[i], 'ts', ARGV[i + 1], 'data', ARGV[i + 2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_APPEND_SHA = hashlib.sha1(_APPEND.encode(), usedforsecurity=False).hexdigest()


class RunEvent(BaseModel):
    """One event of a run, as read back. ``id`` is the stream id (sortable, ``<ms>-<seq>``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str
    event: str
    ts: float
    data: dict[str, JsonValue]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisEventLog:
    """Appends to and reads the per-run event streams. Thread-safe as redis-py clients are."""

    def __init__(
        self,
        client: StateClient,
        keys: KeySchema,
        *,
        maxlen: int = DEFAULT_MAXLEN,
        ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        if maxlen < 1 or ttl_s < 1:
            raise ValueError(f"maxlen and ttl_s must be positive, got {maxlen}, {ttl_s}")
        self._r = client
        self.keys = keys
        self.maxlen = maxlen
        self.ttl_ms = ttl_s * 1000

    # -- writing ---------------------------------------------------------------------

    def append(
        self, run_id: str, event: str, data: dict[str, JsonValue], ts: float | None = None
    ) -> None:
        self.append_many([AuditEvent(run_id, event, time.time() if ts is None else ts, data)])

    def append_many(self, events: Sequence[AuditEvent]) -> None:
        """Write events in one round trip: one script call per run (a pipeline of them when
        the batch spans runs). StoreError on failure."""
        if not events:
            return
        args: dict[str, list[str | int]] = {}
        for item in events:
            triple = [item.event, repr(item.ts), json.dumps(item.data, separators=(",", ":"),
                                                            default=str)]  # fmt: skip
            args.setdefault(item.run_id, [self.maxlen, self.ttl_ms]).extend(triple)
        try:
            try:
                self._send(args)
            except redis.exceptions.NoScriptError:
                # A restarted or flushed Redis: load the script and send again. No call of
                # this batch ran (each one failed the same way), so nothing is written twice.
                self._r.script_load(_APPEND)
                self._send(args)
        except redis.RedisError as exc:
            raise StoreError(f"writing {len(events)} run events failed: {exc}") from exc

    def _send(self, args: dict[str, list[str | int]]) -> None:
        if hotpath.supported(self._r):
            # Packed by hand on the writer's kept connection (checkpoint/hotpath.py): the
            # audit writer sends one of these per batch, a call per run in it.
            payload = b"".join(
                hotpath.evalsha(_APPEND_SHA, [self.keys.events(run_id)], argv)
                for run_id, argv in args.items()
            )
            replies = hotpath.call_many(cast(redis.Redis, self._r), payload, len(args))
            errors = [r for r in replies if isinstance(r, redis.ResponseError)]
            if errors:
                raise errors[0]  # NOSCRIPT for all of them (see append_many), or a real error
            return
        if len(args) == 1:
            ((run_id, argv),) = args.items()
            self._r.evalsha(_APPEND_SHA, 1, self.keys.events(run_id), *argv)
            return
        pipe = self._r.pipeline(transaction=False)
        for run_id, argv in args.items():
            # Not pipe.evalsha: redis-py's cluster pipeline blocks that method, not EVALSHA.
            pipe.execute_command("EVALSHA", _APPEND_SHA, 1, self.keys.events(run_id), *argv)
        pipe.execute()

    # -- reading ---------------------------------------------------------------------

    def read(self, run_id: str, *, after: str = "0", count: int = 500) -> list[RunEvent]:
        """Events after stream id ``after`` (exclusive), oldest first, at most ``count``."""
        try:
            raw: Any = self._r.xrange(self.keys.events(run_id), min=f"({after}", count=count)
        except redis.RedisError as exc:
            raise StoreError(f"reading events of run {run_id!r} failed: {exc}") from exc
        return [self._decode(run_id, entry_id, fields) for entry_id, fields in raw]

    def read_all(self, run_id: str, *, after: str = "0") -> Iterator[RunEvent]:
        while True:
            page = self.read(run_id, after=after)
            yield from page
            if len(page) < 500:
                return
            after = page[-1].id

    def wait(self, run_id: str, *, after: str, block_ms: int) -> list[RunEvent]:
        """Block up to ``block_ms`` for events after ``after``; [] when none came."""
        key = self.keys.events(run_id)
        try:
            reply: Any = self._r.xread({key: after}, count=500, block=max(1, block_ms))
        except redis.RedisError as exc:
            raise StoreError(f"waiting for events of run {run_id!r} failed: {exc}") from exc
        events: list[RunEvent] = []
        for _stream, entries in reply or []:
            events.extend(self._decode(run_id, entry_id, fields) for entry_id, fields in entries)
        return events

    def _decode(self, run_id: str, entry_id: bytes | str, fields: dict[Any, Any]) -> RunEvent:
        got = {_text(k): _text(v) for k, v in fields.items()}
        try:
            data = json.loads(got.get("data", "{}"))
            ts = float(got.get("ts", "0"))
        except ValueError:  # a hand-written entry: show what is there rather than fail
            data, ts = {"raw": got}, 0.0
        return RunEvent(
            id=_text(entry_id),
            run_id=run_id,
            event=got.get("event", "?"),
            ts=ts,
            data=data if isinstance(data, dict) else {"value": data},
        )
