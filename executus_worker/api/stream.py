"""The live event stream of a run (Server-Sent Events): its status, its transcript and its
recorded events as they come, until it ends.

    event: status    data: RunView + "messages" (transcript length); first, and on each change
    event: message   data: {"index": i, "message": {...}}                        id: cursor
    event: rewind    data: {"messages": n}                                       id: cursor
                     the stored transcript was cut back to n messages (a phased run re-runs
                     its interrupted phase from the start): drop what you hold beyond n
    event: audit     data: {"id", "event", "ts", "data"}: one entry of the run's event stream
                     (enqueued, claimed, step, interrupted, recovered, completed, ...)  id: cursor
    event: error     data: ErrorDetail   the store is unreachable; the stream keeps trying
    event: end       data: {"reason": "terminal" | "timeout" | "gone", "status": ...}
    : keep-alive     a comment when nothing else was sent for EXECUTUS_API_STREAM_HEARTBEAT_S

The id is a resume cursor: ``<messages held>`` or ``<messages held>/<last audit entry id>``.
A reconnect sends it back as ``Last-Event-ID`` (browsers do it by themselves) and gets only
what is newer; ``?after=n`` resumes after n messages. Cross-source order is not promised: a
step's audit entry may come just before or after its message. A stream lasts at most
EXECUTUS_API_STREAM_MAX_S, then ends with reason ``timeout``.

``RunFollower`` decides what to send from successive reads (blocking Client calls: the async
side runs ``poll`` in a worker thread). Each poll reads the record and the audit entries after
the cursor (one small read each), and the transcript only when the record's ``updated_at``
moved -- every checkpoint save bumps it -- so a quiet run costs two small reads per poll however
long its transcript is. The record is read *before* the transcript, so a save that lands
between the two reads is seen now or on the next poll, never missed.

A run's terminal audit entry is written a moment after its record turns terminal, so a
terminal record ends the stream once that entry was sent, or ``AUDIT_GRACE_S`` later (a run
whose entries are switched off or were lost must not hold the stream open).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import BaseModel

from executus_worker.api.views import (
    CURSOR_PATTERN,
    STREAM_EVENTS,
    AuditEvent,
    EndEvent,
    ErrorDetail,
    MessageEvent,
    RewindEvent,
    RunView,
    StatusEvent,
)
from executus_worker.client import Client
from executus_worker.core.models import Message, RunRecord, RunStatus
from executus_worker.errors import RunNotFoundError, StoreError

RETRY_MS = 2000
HEARTBEAT = b": keep-alive\n\n"
AUDIT_GRACE_S = 2.0
AUDIT_PAGE = 500
TERMINAL_AUDIT = frozenset({"completed", "failed", "cancelled", "dead"})
CURSOR = re.compile(CURSOR_PATTERN)
_NAMES = {model: name for name, (model, _) in STREAM_EVENTS.items()}


@dataclass(frozen=True)
class Cursor:
    """Where a client is: messages held, and the last audit entry it got ("0": none)."""

    messages: int = 0
    audit: str = "0"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        if CURSOR.match(text) is None:
            raise ValueError(f"not a stream cursor: {text!r}")
        messages, _, audit = text.partition("/")
        return cls(int(messages), audit or "0")

    def __str__(self) -> str:
        return str(self.messages) if self.audit == "0" else f"{self.messages}/{self.audit}"


@dataclass(frozen=True)
class Event:
    event: str
    data: dict[str, Any]
    id: str | None = None

    @classmethod
    def of(cls, payload: BaseModel, cursor: Cursor | None = None) -> Event:
        """The event carrying ``payload``, named after its model (views.STREAM_EVENTS)."""
        return cls(
            _NAMES[type(payload)],
            payload.model_dump(mode="json"),
            None if cursor is None else str(cursor),
        )

    def encode(self) -> bytes:
        lines = [f"event: {self.event}"]
        if self.id is not None:
            lines.append(f"id: {self.id}")
        # Compact JSON never contains a raw newline (they are escaped in strings), so the
        # payload is always one data line.
        lines.append("data: " + json.dumps(self.data, separators=(",", ":")))
        return ("\n".join(lines) + "\n\n").encode()


GONE = EndEvent(reason="gone", status=None)


@dataclass
class RunFollower:
    """Turns reads of one run into the events a client has not seen yet."""

    client: Client
    run_id: str
    cursor: Cursor = field(default_factory=Cursor)  # what the client holds
    clock: Callable[[], float] = time.monotonic
    done: bool = False
    _known: list[Message] | None = None  # the transcript as the client now holds it
    _read_at: float | None = None  # the record's updated_at when the transcript was read
    _last_status: StatusEvent | None = None
    _failing: bool = False
    _audit_ended: bool = False
    _terminal_since: float | None = None

    @property
    def status(self) -> RunStatus | None:
        """The last status sent, if any."""
        return None if self._last_status is None else self._last_status.status

    def first(self) -> list[Event]:
        """The opening events. Raises ``RunNotFoundError`` for an unknown run and
        ``StoreError`` when Redis is down: the caller answers 404 or 503, not a stream."""
        return self._read(self.client.status(self.run_id), strict=True)

    def poll(self) -> list[Event]:
        """What changed since the last call; an ``end`` event once the run is over."""
        try:
            record = self.client.status(self.run_id)
        except RunNotFoundError:
            # Past its retention (or the store lost it): nothing more will come.
            self.done = True
            return [Event.of(GONE)]
        except StoreError as exc:
            return self._outage(exc)
        return self._read(record)

    def _read(self, record: RunRecord, *, strict: bool = False) -> list[Event]:
        events: list[Event] = []  # kept on a failure: the cursor has moved past them
        try:
            self._audit(events)
            if record.updated_at != self._read_at or self._known is None:
                events += self._diff(self.client.transcript(self.run_id))
                self._read_at = record.updated_at
        except RunNotFoundError:
            if strict:
                raise
            self.done = True
            return [*events, Event.of(GONE)]
        except StoreError as exc:
            if strict:
                raise
            return events + self._outage(exc)
        self._failing = False
        assert self._known is not None
        status = StatusEvent(**RunView.of(record).model_dump(), messages=len(self._known))
        # Every save moves updated_at: a status event says something changed besides the time.
        if self._last_status is None or _timeless(status) != _timeless(self._last_status):
            events.append(Event.of(status))
        self._last_status = status
        if record.status.terminal and self._audit_settled():
            self.done = True
            events.append(Event.of(EndEvent(reason="terminal", status=record.status)))
        return events

    def _audit_settled(self) -> bool:
        if self._audit_ended or not self.client.settings.audit_stream:
            return True
        now = self.clock()
        if self._terminal_since is None:
            self._terminal_since = now
        return now - self._terminal_since >= AUDIT_GRACE_S

    def _audit(self, events: list[Event]) -> None:
        if not self.client.settings.audit_stream:
            return
        while True:
            page = self.client.event_log.read(
                self.run_id, after=self.cursor.audit, count=AUDIT_PAGE
            )
            for entry in page:
                self.cursor = Cursor(self.cursor.messages, entry.id)
                self._audit_ended = self._audit_ended or entry.event in TERMINAL_AUDIT
                payload = AuditEvent(id=entry.id, event=entry.event, ts=entry.ts, data=entry.data)
                events.append(Event.of(payload, self.cursor))
            if len(page) < AUDIT_PAGE:
                return

    def _diff(self, messages: list[Message]) -> list[Event]:
        events: list[Event] = []
        if self._known is None:
            # What the client says it holds is taken on trust: it came from this transcript.
            held = min(self.cursor.messages, len(messages))
            self._known = messages[:held]
            if self.cursor.messages > held:
                events.append(self._rewind(held))
        known = self._known
        common = 0
        for old, new in zip(known, messages, strict=False):
            if old != new:
                break
            common += 1
        if common < len(known):
            events.append(self._rewind(common))
        for index in range(common, len(messages)):
            self.cursor = Cursor(index + 1, self.cursor.audit)
            events.append(Event.of(MessageEvent(index=index, message=messages[index]), self.cursor))
        self._known = messages
        return events

    def _rewind(self, count: int) -> Event:
        self.cursor = Cursor(count, self.cursor.audit)
        return Event.of(RewindEvent(messages=count), self.cursor)

    def _outage(self, exc: StoreError) -> list[Event]:
        if self._failing:
            return []
        self._failing = True  # say it once per outage, not once per poll
        message = f"the run store is unavailable: {exc}"
        return [Event.of(ErrorDetail(code="store_unavailable", message=message))]


def _timeless(status: StatusEvent) -> StatusEvent:
    return status.model_copy(update={"updated_at": 0.0})


@dataclass(frozen=True)
class StreamLimits:
    poll_s: float
    heartbeat_s: float
    max_s: float


async def sse_stream(
    follower: RunFollower, opening: list[Event], limits: StreamLimits
) -> AsyncIterator[bytes]:
    """The response body: ``opening`` (already read), then polls until the run ends or the
    stream's time is up. Cancelled (client gone) at any ``await``."""
    deadline = time.monotonic() + limits.max_s
    yield f"retry: {RETRY_MS}\n\n".encode()
    for event in opening:
        yield event.encode()
    last_sent = time.monotonic()
    while not follower.done:
        now = time.monotonic()
        if now >= deadline:
            yield Event.of(EndEvent(reason="timeout", status=follower.status)).encode()
            return
        if now - last_sent >= limits.heartbeat_s:
            yield HEARTBEAT
            last_sent = now
        await anyio.sleep(min(limits.poll_s, max(0.0, deadline - now)))
        events = await anyio.to_thread.run_sync(follower.poll)
        for event in events:
            yield event.encode()
        if events:
            last_sent = time.monotonic()
