"""The audit battery's sinks: the stream writer's contract, the fan-out's containment."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from pydantic import JsonValue

from executus_worker.batteries.audit import (
    MAX_VALUE_CHARS,
    FanoutAudit,
    MemoryAudit,
    StreamAudit,
)
from executus_worker.core.models import RunInfo
from executus_worker.core.ports import AuditEvent

RUN = RunInfo(run_id="r1", agent="a", epoch=3)


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[AuditEvent]] = []
        self.fail = fail

    def append_many(self, events: Sequence[AuditEvent]) -> None:
        if self.fail:
            raise ConnectionError("redis gone")
        self.calls.append(list(events))


def test_stream_audit_stamps_the_epoch_and_bounds_long_values() -> None:
    sink = Sink()
    StreamAudit(sink).record(RUN, "failed", {"error": "boom", "traceback": "x" * 10_000})
    ((written,),) = sink.calls
    assert (written.run_id, written.event, written.data["epoch"]) == ("r1", "failed", 3)
    assert written.data["error"] == "boom"
    traceback = written.data["traceback"]
    assert isinstance(traceback, str) and len(traceback) == MAX_VALUE_CHARS


def test_claimed_and_started_ride_along_with_the_next_event() -> None:
    sink, other = Sink(), RunInfo(run_id="r2", agent="a", epoch=1)
    audit = StreamAudit(sink)
    audit.record(RUN, "claimed", {"owner": "w:1"})
    audit.record(other, "resumed", {"iteration": 4})
    audit.record(RUN, "started", {})
    assert sink.calls == []
    audit.record(RUN, "step", {"iteration": 1})
    assert [[(e.run_id, e.event) for e in call] for call in sink.calls] == [
        [("r1", "claimed"), ("r2", "resumed"), ("r1", "started"), ("r1", "step")]
    ]
    audit.record(RUN, "claimed", {})
    audit.flush()
    assert [e.event for e in sink.calls[-1]] == ["claimed"]


def test_a_failing_write_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        StreamAudit(Sink(fail=True)).record(RUN, "step", {})
    assert "events not written: redis gone" in caplog.text


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


def test_a_single_loops_final_step_rides_with_the_ending_a_phases_does_not() -> None:
    sink = Sink()
    audit = StreamAudit(sink)
    audit.record(RUN, "step", {"iteration": 1, "done": False, "phase": None})
    audit.record(RUN, "step", {"iteration": 2, "done": True, "phase": "plan"})
    assert [[e.event for e in call] for call in sink.calls] == [["step"], ["step"]]
    audit.record(RUN, "step", {"iteration": 3, "done": True, "phase": None})
    assert len(sink.calls) == 2
    audit.record(RUN, "completed", {"iterations": 3})
    assert [e.event for e in sink.calls[-1]] == ["step", "completed"]
