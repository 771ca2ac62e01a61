"""RunFollower: what the event stream sends, decided from successive reads of a run.

Driven on the in-memory store through a real ``Client``, playing the worker's part step by
step, so every transition (a step, a resume that cuts the transcript back, an outage, the
end) is exact and needs no timing.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from executus_worker.api.stream import Cursor, Event, RunFollower
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import Fence
from executus_worker.client import Client
from executus_worker.core.models import Checkpoint, Message, RunRequest, RunStatus
from executus_worker.errors import RunNotFoundError, StoreError
from executus_worker.settings import Settings

RUN = "r1"


class World:
    """A run on a memory store, moved forward by hand."""

    def __init__(self) -> None:
        self.store = MemoryStore(clock=lambda: 0.0)
        # The audit stream lives in Redis: test_stream_audit.py follows it on a real one.
        settings = Settings.model_construct(check_agents_on_enqueue=False, audit_stream=False)
        self.client = Client(settings, store=self.store)
        self.clock = itertools.count(100)
        self.stored = 0
        self.store.register(
            RunRequest(agent="demo.counter"), run_id=RUN, queue="q", now=next(self.clock)
        )
        self.fence: Fence | None = None

    def claim(self) -> None:
        result = self.store.claim(
            RUN, owner="w", lease_ttl_s=1e9, max_attempts=5, now=next(self.clock)
        )
        assert result.fence is not None
        self.fence = result.fence

    def step(self, *contents: str, base_len: int | None = None) -> None:
        assert self.fence is not None
        base = self.stored if base_len is None else base_len
        new = [Message(role="assistant", content=c) for c in contents]
        self.store.save_checkpoint(
            RUN,
            fence=self.fence,
            base_len=base,
            new_messages=new,
            checkpoint=Checkpoint(run_id=RUN, epoch=self.fence.epoch),
            now=next(self.clock),
        )
        self.stored = base + len(new)

    def finish(self, status: RunStatus = RunStatus.COMPLETED) -> None:
        assert self.fence is not None
        self.store.finish(
            RUN, fence=self.fence, status=status, output="done", error=None,
            base_len=self.stored, new_messages=[], now=next(self.clock), result_ttl_s=60,
        )  # fmt: skip


def brief(events: list[Event]) -> list[tuple[str, Any]]:
    """Each event as (name, the part that matters)."""
    out: list[tuple[str, Any]] = []
    for e in events:
        if e.event == "message":
            assert e.id == str(e.data["index"] + 1)
            out.append(("message", e.data["message"]["content"]))
        elif e.event == "status":
            out.append(("status", (e.data["status"], e.data["messages"])))
        elif e.event == "rewind":
            assert e.id == str(e.data["messages"])
            out.append(("rewind", e.data["messages"]))
        else:
            out.append((e.event, e.data))
    return out


@pytest.fixture
def world() -> World:
    return World()


def test_steps_become_messages_and_status_changes_until_the_end(world: World) -> None:
    follower = RunFollower(world.client, RUN)
    assert brief(follower.first()) == [("status", ("queued", 0))]
    assert follower.poll() == []  # nothing changed: nothing sent
    world.claim()
    assert brief(follower.poll()) == [("status", ("running", 0))]
    world.step("step 1")
    world.step("step 2")
    assert brief(follower.poll()) == [
        ("message", "step 1"), ("message", "step 2"), ("status", ("running", 2))
    ]  # fmt: skip
    world.step("step 3")
    world.finish()
    assert brief(follower.poll()) == [
        ("message", "step 3"),
        ("status", ("completed", 3)),
        ("end", {"reason": "terminal", "status": "completed"}),
    ]
    assert follower.done


def test_a_transcript_cut_back_on_resume_is_a_rewind_then_the_new_messages(world: World) -> None:
    """A phased run re-runs its interrupted phase from the start: what was sent past the
    phase start is withdrawn, then the re-run's messages follow."""
    world.claim()
    world.step("plan step 1", "work step 1")
    follower = RunFollower(world.client, RUN)
    follower.first()
    world.step("work redo 1", "work redo 2", base_len=1)
    assert brief(follower.poll()) == [
        ("rewind", 1), ("message", "work redo 1"), ("message", "work redo 2"),
        ("status", ("running", 3)),
    ]  # fmt: skip


def test_a_rewritten_message_is_a_rewind_even_when_the_length_is_unchanged(world: World) -> None:
    world.claim()
    world.step("a", "b")
    follower = RunFollower(world.client, RUN)
    follower.first()
    world.step("c", base_len=1)
    assert brief(follower.poll()) == [("rewind", 1), ("message", "c")]


def test_resuming_after_n_messages_sends_only_the_rest(world: World) -> None:
    world.claim()
    world.step("one", "two", "three")
    assert brief(RunFollower(world.client, RUN, cursor=Cursor(2)).first()) == [
        ("message", "three"), ("status", ("running", 3))
    ]  # fmt: skip
    assert brief(RunFollower(world.client, RUN, cursor=Cursor(9)).first()) == [
        ("rewind", 3), ("status", ("running", 3))
    ]  # fmt: skip


def test_an_unknown_run_is_refused_up_front(world: World) -> None:
    with pytest.raises(RunNotFoundError):
        RunFollower(world.client, "nope").first()


def test_a_run_that_expires_while_followed_ends_the_stream(world: World) -> None:
    follower = RunFollower(world.client, RUN)
    follower.first()
    world.store._runs.clear()  # as if its retention ran out
    assert brief(follower.poll()) == [("end", {"reason": "gone", "status": None})]
    assert follower.done


def test_an_outage_is_reported_once_and_the_stream_goes_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    follower = RunFollower(world.client, RUN)
    follower.first()

    def down(run_id: str) -> None:
        raise StoreError("redis read failed: Connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(world.store, "get", down)
        [event] = follower.poll()
        assert event.event == "error"
        assert event.data["code"] == "store_unavailable"
        assert "Connection refused" in event.data["message"]
        assert follower.poll() == []  # still down: said once
    assert not follower.done
    world.claim()
    world.step("after the outage")
    assert brief(follower.poll()) == [
        ("message", "after the outage"), ("status", ("running", 1))
    ]  # fmt: skip


def test_events_are_one_data_line_of_json_whatever_the_content(world: World) -> None:
    world.claim()
    world.step("line one\nline two\r\n: not a comment\n\nevent: fake")
    [message, _status] = RunFollower(world.client, RUN).first()
    wire = message.encode().decode()
    assert wire.endswith("\n\n")
    lines = wire[:-2].split("\n")
    assert lines[:2] == ["event: message", "id: 1"]
    assert len(lines) == 3 and lines[2].startswith("data: {")
