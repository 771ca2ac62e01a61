"""The audit battery's sinks: the stream writer's contract, the fan-out's containment."""

from __future__ import annotations

import logging

import pytest
from pydantic import JsonValue

from executus_worker.batteries.audit import (
    MAX_VALUE_CHARS,
    FanoutAudit,
    MemoryAudit,
    StreamAudit,
)
from executus_worker.core.models import RunInfo

RUN = RunInfo(run_id="r1", agent="a", epoch=3)


class Sink:
    def __init__(self) -> None:
        self.appended: list[tuple[str, str, dict[str, JsonValue]]] = []
        self.flushes = 0

    def append(
        self, run_id: str, event: str, data: dict[str, JsonValue], ts: float | None = None
    ) -> None:
        self.appended.append((run_id, event, data))

    def flush(self, timeout_s: float = 2.0) -> bool:
        self.flushes += 1
        return True


def test_stream_audit_stamps_the_epoch_and_bounds_long_values() -> None:
    sink = Sink()
    StreamAudit(sink).record(RUN, "failed", {"error": "boom", "traceback": "x" * 10_000})
    ((run_id, event, data),) = sink.appended
    assert (run_id, event, data["epoch"], data["error"]) == ("r1", "failed", 3, "boom")
    traceback = data["traceback"]
    assert isinstance(traceback, str) and len(traceback) == MAX_VALUE_CHARS


@pytest.mark.parametrize(
    ("event", "flushed"),
    [("step", 0), ("claimed", 0), ("completed", 1), ("failed", 1), ("interrupted", 1)],
)
def test_an_attempts_ending_flushes_what_was_buffered(event: str, flushed: int) -> None:
    sink = Sink()
    StreamAudit(sink).record(RUN, event, {})
    assert sink.flushes == flushed


def test_a_failing_sink_never_keeps_the_event_from_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
            raise ConnectionError("redis gone")

    memory = MemoryAudit()
    with caplog.at_level(logging.ERROR):
        FanoutAudit([Broken(), memory]).record(RUN, "step", {"iteration": 1})
    assert memory.names() == ["step"]
    assert "redis gone" in caplog.text
