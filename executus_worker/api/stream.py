"""The live event stream of a run (Server-Sent Events): its status and its transcript as they
change, until it ends.

    event: status    data: RunView + "messages" (transcript length); first, and on each change
    event: message   data: {"index": i, "message": {...}}         id: i + 1
    event: rewind    data: {"messages": n}                         id: n
                     the stored transcript was cut back to n messages (a phased run re-runs
                     its interrupted phase from the start): drop what you hold beyond n
    event: error     data: ErrorDetail   the store is unreachable; the stream keeps trying
    event: end       data: {"reason": "terminal" | "timeout" | "gone", "status": ...}
    : keep-alive     a comment when nothing else was sent for EXECUTUS_API_STREAM_HEARTBEAT_S

A message event's id is the number of messages the client holds after it, so a reconnect with
``Last-Event-ID: n`` (browsers send it by themselves) or ``?after=n`` resumes at message n.
A stream lasts at most EXECUTUS_API_STREAM_MAX_S, then ends with reason ``timeout``.

``RunFollower`` decides what to send from successive reads (blocking Client calls: the async
side runs ``poll`` in a worker thread). It reads the record every poll and the transcript only
when the record's ``updated_at`` moved -- every checkpoint save bumps it -- so a quiet run costs
one small read per poll however long its transcript is. The record is read *before* the
transcript, so a save that lands between the two reads is seen now or on the next poll, never
missed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel

from executus_worker.api.views import (
    STREAM_EVENTS,
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
_NAMES = {model: name for name, (model, _) in STREAM_EVENTS.items()}


@dataclass(frozen=True)
class Event:
    event: str
    data: dict[str, Any]
    id: str | None = None

    @classmethod
    def of(cls, payload: BaseModel, id: str | None = None) -> Event:
        """The event carrying ``payload``, named after its model (views.STREAM_EVENTS)."""
        return cls(_NAMES[type(payload)], payload.model_dump(mode="json"), id)

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
    after: int = 0  # messages the client already holds (Last-Event-ID)
    done: bool = False
    _known: list[Message] | None = None  # the transcript as the client now holds it
    _read_at: float | None = None  # the record's updated_at when the transcript was read
    _last_status: StatusEvent | None = None
    _failing: bool = False

    @property
    def status(self) -> RunStatus | None:
        """The last status sent, if any."""
        return None if self._last_status is None else self._last_status.status

    def first(self) -> list[Event]:
        """The opening events; ``RunNotFoundError`` for an unknown run (the caller's 404)."""
        return self._read(self.client.status(self.run_id))

    def poll(self) -> list[Event]:
        """What changed since the last call; an ``end`` event once the run is terminal."""
        try:
            record = self.client.status(self.run_id)
        except RunNotFoundError:
            # Past its retention (or the store lost it): nothing more will come.
            self.done = True
            return [Event.of(GONE)]
        except StoreError as exc:
            return self._outage(exc)
        return self._read(record)

    def _read(self, record: RunRecord) -> list[Event]:
        events: list[Event] = []
        if record.updated_at != self._read_at or self._known is None:
            try:
                messages = self.client.transcript(self.run_id)
            except RunNotFoundError:
                self.done = True
                return [Event.of(GONE)]
            except StoreError as exc:
                return self._outage(exc)
            events += self._diff(messages)
            self._read_at = record.updated_at
        self._failing = False
        assert self._known is not None
        status = StatusEvent(**RunView.of(record).model_dump(), messages=len(self._known))
        # Every save moves updated_at: a status event says something changed besides the time.
        if self._last_status is None or _timeless(status) != _timeless(self._last_status):
            events.append(Event.of(status))
        self._last_status = status
        if record.status.terminal:
            self.done = True
            events.append(Event.of(EndEvent(reason="terminal", status=record.status)))
        return events

    def _diff(self, messages: list[Message]) -> list[Event]:
        events: list[Event] = []
        if self._known is None:
            # What the client says it holds is taken on trust: it came from this transcript.
            held = min(self.after, len(messages))
            self._known = messages[:held]
            if self.after > held:
                events.append(_rewind(held))
        known = self._known
        common = 0
        for old, new in zip(known, messages, strict=False):
            if old != new:
                break
            common += 1
        if common < len(known):
            events.append(_rewind(common))
        for index in range(common, len(messages)):
            payload = MessageEvent(index=index, message=messages[index])
            events.append(Event.of(payload, id=str(index + 1)))
        self._known = messages
        return events

    def _outage(self, exc: StoreError) -> list[Event]:
        if self._failing:
            return []
        self._failing = True  # say it once per outage, not once per poll
        message = f"the run store is unavailable: {exc}"
        return [Event.of(ErrorDetail(code="store_unavailable", message=message))]


def _timeless(status: StatusEvent) -> StatusEvent:
    return status.model_copy(update={"updated_at": 0.0})


def _rewind(count: int) -> Event:
    return Event.of(RewindEvent(messages=count), id=str(count))


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
