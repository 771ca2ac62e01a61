"""RunFollower with the run's audit stream, on a real Redis: entries are forwarded once, the
cursor resumes after them, and a finished run's stream waits (briefly) for its last entry."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from executus_worker.api.stream import AUDIT_GRACE_S, Cursor, Event, RunFollower
from executus_worker.client import Client
from executus_worker.core.models import Checkpoint, Message, RunStatus
from executus_worker.settings import Settings

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    settings = Settings.model_construct(check_agents_on_enqueue=False)
    with Client.from_url(
        redis_url, key_prefix=f"sse{uuid.uuid4().hex[:8]}", settings=settings
    ) as c:
        yield c


def prefix() -> str:
    return f"sse{uuid.uuid4().hex[:8]}"


def names(events: list[Event]) -> list[str]:
    return [f"{e.event}:{e.data['event']}" if e.event == "audit" else e.event for e in events]


def run_a_step(client: Client, run_id: str) -> None:
    """A worker's part: claim, save one step, record it."""
    claim = client.store.claim(run_id, owner="w", lease_ttl_s=60, max_attempts=5, now=time.time())
    assert claim.fence is not None
    client.store.save_checkpoint(
        run_id, fence=claim.fence, base_len=0,
        new_messages=[Message(role="assistant", content="step 1")],
        checkpoint=Checkpoint(run_id=run_id, epoch=claim.fence.epoch), now=time.time(),
    )  # fmt: skip
    client.event_log.append(run_id, "step", {"iteration": 1})
    client.store.finish(
        run_id, fence=claim.fence, status=RunStatus.COMPLETED, output="done 1", error=None,
        base_len=1, new_messages=[], now=time.time(), result_ttl_s=60,
    )  # fmt: skip


def test_audit_entries_are_forwarded_once_with_a_cursor_that_resumes_after_them(
    client: Client,
) -> None:
    run_id = client.enqueue(agent="demo.counter", run_id="r-audit")  # records "enqueued"
    clock = Clock()
    follower = RunFollower(client, run_id, clock=clock)
    opening = follower.first()
    assert names(opening) == ["audit:enqueued", "status"]
    enqueued = opening[0]
    assert enqueued.data["data"] == {"agent": "demo.counter", "queue": "executus"}
    assert enqueued.id == f"0/{enqueued.data['id']}"

    run_a_step(client, run_id)
    polled = follower.poll()
    assert names(polled) == ["audit:step", "message", "status"]
    step, message = polled[0], polled[1]
    assert message.id == f"1/{step.data['id']}"  # both cursors, whichever event came last
    assert polled[2].data["status"] == "completed"
    assert not follower.done  # the terminal entry has not been written yet

    clock.now += AUDIT_GRACE_S / 2
    assert follower.poll() == []
    client.event_log.append(run_id, "completed", {"iterations": 1})
    assert names(follower.poll()) == ["audit:completed", "end"]
    assert follower.done

    # A reconnect from the message's id gets only the entry after it, then the end.
    again = RunFollower(client, run_id, cursor=Cursor.parse(message.id))
    assert names(again.first()) == ["audit:completed", "status", "end"]


def test_a_finished_run_without_its_last_entry_ends_after_the_grace(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    clock = Clock()
    follower = RunFollower(client, run_id, clock=clock)
    follower.first()
    run_a_step(client, run_id)
    assert "end" not in names(follower.poll())
    clock.now += AUDIT_GRACE_S
    [end] = follower.poll()
    assert end.data == {"reason": "terminal", "status": "completed"}


def test_without_an_audit_stream_the_end_comes_at_once(redis_url: str) -> None:
    settings = Settings.model_construct(check_agents_on_enqueue=False, audit_stream=False)
    with Client.from_url(
        redis_url, key_prefix=f"sse{uuid.uuid4().hex[:8]}", settings=settings
    ) as c:
        run_id = c.enqueue(agent="demo.counter")
        c.cancel(run_id)
        assert names(RunFollower(c, run_id).first()) == ["status", "end"]
