"""Run events in Redis: one bounded stream per run, with a TTL (what the audit battery writes and
``Client.events`` / ``executus-worker events`` read).

Each event is one stream entry ``{event, ts, data}`` (``data`` is a JSON object) in
``<prefix>:{run:<id>}:events``, next to the run's other keys (same hash tag, same Cluster slot).
A write is ``XADD MAXLEN ~ <maxlen>`` plus ``PEXPIRE`` in one round trip: the stream stays
bounded however long a run lives (approximate trimming costs O(1) amortised), and it expires
``ttl_s`` after the run's last event, so a finished run leaves no key without a TTL.

Events are observations, never the source of truth (that is the run record): a write that
fails is logged and dropped by the writers here, and the run goes on.

:class:`BufferedEventLog` takes the writes off the run's thread: an append is a queue put, and
a daemon thread sends whatever has piled up in one pipeline. ``flush`` waits until everything
appended before it is written -- the audit battery calls it when a run's attempt ends, so a
finished or interrupted attempt's events are in Redis before its task returns.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, JsonValue

from executus_worker.checkpoint.keys import KeySchema
from executus_worker.errors import StoreError

log = logging.getLogger(__name__)

DEFAULT_MAXLEN = 1000
DEFAULT_TTL_S = 86_400


class RunEvent(BaseModel):
    """One event of a run, as read back. ``id`` is the stream id (sortable, ``<ms>-<seq>``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str
    event: str
    ts: float
    data: dict[str, JsonValue]


@dataclass(frozen=True)
class PendingEvent:
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
        client: redis.Redis,
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
        self.append_many([PendingEvent(run_id, event, time.time() if ts is None else ts, data)])

    def flush(self, timeout_s: float = 2.0) -> bool:
        return True  # every append was written before it returned

    def append_many(self, events: Sequence[PendingEvent]) -> None:
        """Write events in one round trip (a non-transactional pipeline). StoreError on failure."""
        if not events:
            return
        pipe = self._r.pipeline(transaction=False)
        for item in events:
            key = self.keys.events(item.run_id)
            fields: dict[Any, Any] = {
                "event": item.event,
                "ts": repr(item.ts),
                "data": json.dumps(item.data, separators=(",", ":"), default=str),
            }
            pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)
            pipe.pexpire(key, self.ttl_ms)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"writing {len(events)} run events failed: {exc}") from exc

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


class BufferedEventLog:
    """Appends cost the caller a queue put; one daemon thread writes them in batches.

    Bounded: past ``max_pending`` unwritten events (Redis down for a while) the oldest are
    dropped and counted -- a run never blocks or fails on its audit trail.
    """

    def __init__(
        self,
        log_: RedisEventLog,
        *,
        max_pending: int = 10_000,
        batch: int = 500,
        retry_s: float = 1.0,
    ) -> None:
        self._log = log_
        self._max_pending = max_pending
        self._batch = batch
        self._retry_s = retry_s
        self._pending: collections.deque[PendingEvent] = collections.deque()
        self._cond = threading.Condition()
        self._appended = 0  # sequence numbers: flush waits for written >= appended-at-call
        self._written = 0
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._halt = False

    def append(
        self, run_id: str, event: str, data: dict[str, JsonValue], ts: float | None = None
    ) -> None:
        item = PendingEvent(run_id, event, time.time() if ts is None else ts, data)
        with self._cond:
            if self._thread is None:
                self._start()
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.dropped += 1
                self._written += 1  # never to be written: flush must not wait for it
            self._pending.append(item)
            self._appended += 1
            self._cond.notify_all()

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every event appended so far is written (or dropped). False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._appended
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout_s: float = 2.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._halt = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)

    def _start(self) -> None:
        # Lazily, in the process that appends: a thread never survives a fork.
        self._halt = False
        self._thread = threading.Thread(target=self._run, name="executus-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing_since: float | None = None
        while True:
            with self._cond:
                while not self._pending and not self._halt:
                    self._cond.wait()
                if self._halt and not self._pending:
                    return
                take = min(self._batch, len(self._pending))
                batch = [self._pending.popleft() for _ in range(take)]
            try:
                self._log.append_many(batch)
            except Exception as exc:
                if self._halt:  # closing with Redis away: give up rather than hang on
                    with self._cond:
                        self.dropped += len(batch) + len(self._pending)
                        self._written += len(batch) + len(self._pending)
                        self._pending.clear()
                        self._cond.notify_all()
                    return
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("run events not written, retrying: %s", exc)
                with self._cond:
                    # Back to the front, in order; the bound still applies.
                    self._pending.extendleft(reversed(batch))
                    while len(self._pending) > self._max_pending:
                        self._pending.popleft()
                        self.dropped += 1
                        self._written += 1
                    self._cond.wait(self._retry_s)
                continue
            if failing_since is not None:
                log.warning(
                    "run events written again after %.1fs (%d dropped so far)",
                    time.monotonic() - failing_since, self.dropped,
                )  # fmt: skip
                failing_since = None
            with self._cond:
                self._written += len(batch)
                self._cond.notify_all()
