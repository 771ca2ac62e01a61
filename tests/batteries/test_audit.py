"""The audit battery's sinks: the stream writer's contract, the fan-out's containment."""

from __future__ import annotations

import logging
import os
import threading
import time
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
    audit = StreamAudit(sink)
    audit.record(RUN, "failed", {"error": "boom", "traceback": "x" * 10_000})
    assert audit.flush()
    ((written,),) = sink.calls
    assert (written.run_id, written.event, written.data["epoch"]) == ("r1", "failed", 3)
    assert written.data["error"] == "boom"
    traceback = written.data["traceback"]
    assert isinstance(traceback, str) and len(traceback) == MAX_VALUE_CHARS


def test_record_never_waits_for_the_write_and_a_burst_shares_one_round_trip() -> None:
    gate = threading.Event()

    class Slow(Sink):
        def append_many(self, events: Sequence[AuditEvent]) -> None:
            gate.wait(5)
            super().append_many(events)

    sink, other = Slow(), RunInfo(run_id="r2", agent="a", epoch=1)
    audit = StreamAudit(sink, linger_s=0.05)
    started = time.monotonic()
    for event, run in [("claimed", RUN), ("resumed", other), ("started", RUN), ("step", RUN)]:
        audit.record(run, event, {})
    assert time.monotonic() - started < 0.04, "record waited for the store"
    gate.set()
    assert audit.flush()
    assert [[(e.run_id, e.event) for e in call] for call in sink.calls] == [
        [("r1", "claimed"), ("r2", "resumed"), ("r1", "started"), ("r1", "step")]
    ]


def test_events_keep_their_order_across_batches() -> None:
    sink = Sink()
    audit = StreamAudit(sink, linger_s=0)
    for i in range(500):
        audit.record(RUN, "step", {"iteration": i})
        if i % 37 == 0:
            time.sleep(0.002)
    assert audit.flush()
    written = [e.data["iteration"] for call in sink.calls for e in call]
    assert written == list(range(500))
    assert len(sink.calls) > 1


def test_a_failing_write_is_logged_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    audit = StreamAudit(Sink(fail=True))
    with caplog.at_level(logging.WARNING):
        audit.record(RUN, "step", {})
        assert audit.flush()
    assert "1 run events not written: redis gone" in caplog.text


def test_while_the_store_is_down_the_queue_stays_bounded_and_the_loss_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()

    class Stuck(Sink):
        def append_many(self, events: Sequence[AuditEvent]) -> None:
            gate.wait(5)
            super().append_many(events)

    sink = Stuck()
    audit = StreamAudit(sink, linger_s=0, max_pending=10)
    audit.record(RUN, "step", {"iteration": -1})  # taken by the writer, which then hangs
    time.sleep(0.05)
    for i in range(100):
        audit.record(RUN, "step", {"iteration": i})
    assert not audit.flush(timeout_s=0.1)
    with caplog.at_level(logging.WARNING):
        gate.set()
        assert audit.flush()
    written = [e.data["iteration"] for call in sink.calls for e in call]
    assert written == [-1, *range(90, 100)], "the newest ten kept, in order"
    assert "90 run events dropped" in caplog.text


def test_a_forked_child_writes_only_its_own_events() -> None:
    read, write = os.pipe()

    class PipeSink:
        def append_many(self, events: Sequence[AuditEvent]) -> None:
            os.write(write, ("".join(f"{os.getpid()}:{e.event};" for e in events)).encode())

    gate = threading.Event()

    class Held(PipeSink):
        def append_many(self, events: Sequence[AuditEvent]) -> None:
            gate.wait(5)
            super().append_many(events)

    audit = StreamAudit(Held(), linger_s=0)
    audit.record(RUN, "parent-1", {})
    time.sleep(0.05)  # the writer holds parent-1
    audit.record(RUN, "parent-2", {})  # still queued at the fork
    pid = os.fork()
    if pid == 0:
        try:
            gate.set()
            audit.record(RUN, "child", {})
            audit.flush(timeout_s=5)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    gate.set()
    assert audit.flush()
    os.close(write)
    chunks = b""
    while chunk := os.read(read, 4096):
        chunks += chunk
    os.close(read)
    seen = [x.split(":") for x in chunks.decode().split(";") if x]
    assert sorted(e for p, e in seen if int(p) == pid) == ["child"]
    assert sorted(e for p, e in seen if int(p) == os.getpid()) == ["parent-1", "parent-2"]


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
