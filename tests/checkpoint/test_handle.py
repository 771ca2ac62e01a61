"""RunHandle: incremental saves, the throttle, forced flushes and the terminal calls.

All on MemoryStore with a fake clock: nothing here sleeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from executus_worker.checkpoint.handle import RunHandle, StoreCheckpointerFactory
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import Fence, SaveAck
from executus_worker.core.models import Checkpoint, Message, RunInfo, RunStatus
from executus_worker.core.ports import CheckpointerFactory, RunCheckpointer
from executus_worker.core.stop import OwnershipLost, StopReason, StopToken
from executus_worker.errors import CorruptCheckpointError, StoreError

from .conformance import msgs, request
from .conftest import FakeClock


class SpyStore(MemoryStore):
    """MemoryStore that records what each save/finish sent and can fail the next saves."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.sent: list[tuple[str, int, int]] = []  # (call, base_len, new message count)
        self.fail_next = 0

    def save_checkpoint(self, run_id: str, **kw: Any) -> SaveAck:
        if self.fail_next:
            self.fail_next -= 1
            raise StoreError("redis went away")
        self.sent.append(("save", kw["base_len"], len(kw["new_messages"])))
        return super().save_checkpoint(run_id, **kw)

    def finish(self, run_id: str, **kw: Any) -> None:
        self.sent.append(("finish", kw["base_len"], len(kw["new_messages"])))
        super().finish(run_id, **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def store(clock: FakeClock) -> SpyStore:
    return SpyStore(clock)


def begin(
    store: SpyStore,
    clock: FakeClock,
    throttle_ms: int = 0,
    run_id: str = "r1",
    stop: StopToken | None = None,
) -> RunHandle:
    if store.get(run_id) is None:
        store.register(request(), run_id=run_id, queue="executus", now=clock.now())
    claim = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=clock.now())
    assert claim.fence is not None
    return RunHandle(
        store, run_id, claim.fence, stop=stop, throttle_ms=throttle_ms, clock=clock,
        write_patience_s=0.2,
    )  # fmt: skip


def step(cp: Checkpoint, text: str) -> Checkpoint:
    cp.messages.append(Message(role="assistant", content=text))
    cp.iteration += 1
    return cp


def test_handle_and_factory_satisfy_the_ports(store: SpyStore, clock: FakeClock) -> None:
    factory: CheckpointerFactory = StoreCheckpointerFactory(store, throttle_ms=5, clock=clock)
    run = RunInfo(run_id="r1", agent="a", epoch=3, fence="f00d")
    handle: RunCheckpointer | None = factory.begin(run, StopToken())
    assert isinstance(handle, RunHandle)
    assert (handle.run_id, handle.fence, handle.throttle_ms) == ("r1", Fence("f00d", 3), 5)


def test_factory_gives_no_handle_to_an_unclaimed_run(store: SpyStore) -> None:
    factory = StoreCheckpointerFactory(store)
    assert factory.begin(RunInfo(run_id="r1", agent="a"), StopToken()) is None
    assert factory.begin(RunInfo(run_id="r1", agent="a", epoch=1), StopToken()) is None


def test_each_save_sends_only_messages_after_persisted_len(
    store: SpyStore, clock: FakeClock
) -> None:
    handle = begin(store, clock)
    cp = Checkpoint(run_id="r1", messages=msgs(3))
    assert handle.save(cp) and handle.persisted_len == 3
    assert handle.save(step(cp, "x")) and handle.save(step(cp, "y"))
    assert store.sent == [("save", 0, 3), ("save", 3, 1), ("save", 4, 1)]


def test_throttle_skips_saves_inside_the_window(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock, throttle_ms=1_000)
    cp = Checkpoint(run_id="r1")
    assert handle.save(step(cp, "1"))
    clock.advance(0.5)
    assert not handle.save(step(cp, "2"))
    clock.advance(0.499)
    assert not handle.save(step(cp, "3"))
    clock.advance(0.001)
    assert handle.save(step(cp, "4"))
    assert store.sent == [("save", 0, 1), ("save", 1, 3)]


def test_force_always_writes(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock, throttle_ms=60_000)
    cp = Checkpoint(run_id="r1")
    assert handle.save(step(cp, "1"))
    assert not handle.save(step(cp, "2"))
    assert handle.save(step(cp, "3"), force=True)
    assert store.transcript("r1") == cp.messages


def test_a_failing_save_pauses_the_run_until_the_store_answers(
    store: SpyStore, clock: FakeClock
) -> None:
    """A save that cannot reach the store is retried in place (the run pauses): the next step
    never starts on top of an unsaved one, and nothing is lost or written twice."""
    handle = begin(store, clock, throttle_ms=1_000)
    cp = Checkpoint(run_id="r1")
    assert handle.save(step(cp, "1"))
    clock.advance(2)
    store.fail_next = 3
    assert handle.save(step(cp, "2"))
    assert handle.persisted_len == 2
    assert store.fail_next == 0
    assert store.sent == [("save", 0, 1), ("save", 1, 1)]
    assert store.transcript("r1") == cp.messages


def test_a_failing_write_gives_up_once_a_stop_is_pending(store: SpyStore, clock: FakeClock) -> None:
    """While a shutdown is pending the retries last at most write_patience_s, then the error
    propagates (the worker must exit within its grace period)."""
    stop = StopToken()
    handle = begin(store, clock, stop=stop)
    stop.request(StopReason.SHUTDOWN)
    store.fail_next = 1_000
    with pytest.raises(StoreError):
        handle.save(Checkpoint(run_id="r1", messages=msgs(1)), force=True)


def test_cancel_on_the_save_reply_is_requested_on_the_token(
    store: SpyStore, clock: FakeClock
) -> None:
    stop = StopToken()
    handle = begin(store, clock, stop=stop)
    cp = Checkpoint(run_id="r1")
    handle.save(step(cp, "1"))
    assert stop.reason() is None
    store.request_cancel("r1", now=clock.now())
    handle.save(step(cp, "2"))
    assert stop.reason() is StopReason.CANCEL


def test_a_transcript_behind_after_data_loss_is_rewritten_whole(
    store: SpyStore, clock: FakeClock
) -> None:
    """Redis lost the last saves but our claim survived: the owner rewrites the whole
    transcript from memory, and the stored run is exact again."""
    handle = begin(store, clock)
    cp = Checkpoint(run_id="r1")
    for i in range(1, 4):
        handle.save(step(cp, str(i)))
    store._runs["r1"].msgs[1:] = []  # what a rollback to an older snapshot leaves
    handle.save(step(cp, "4"))
    assert [m.content for m in store.transcript("r1")] == ["1", "2", "3", "4"]
    assert store.sent[-2:] == [("save", 3, 1), ("save", 0, 4)]


def test_a_forgotten_phase_boundary_is_rewritten_not_built_upon(
    store: SpyStore, clock: FakeClock
) -> None:
    """Redis forgot a write that changed only meta (same message count): the next save sees
    another last write than the one it made and rewrites the whole checkpoint."""
    handle = begin(store, clock)
    cp = Checkpoint(run_id="r1")
    handle.save(step(cp, "1"))
    before = dict(store._runs["r1"].ckpt or {})
    cp.completed_phases.append("plan")
    handle.save(cp, force=True)  # the phase boundary: no new message
    store._runs["r1"].ckpt = before  # the rollback
    handle.save(step(cp, "2"))
    loaded = store.load_checkpoint("r1")
    assert loaded is not None and loaded.completed_phases == ["plan"]
    assert [m.content for m in loaded.messages] == ["1", "2"]
    assert store.sent[-1] == ("save", 0, 2)


def test_a_step_sends_only_the_meta_fields_that_changed(store: SpyStore, clock: FakeClock) -> None:
    seen: list[set[str]] = []
    original = store.save_checkpoint

    def spy(run_id: str, **kw: Any) -> SaveAck:
        seen.append(set(kw["meta"]))
        return original(run_id, **kw)

    store.save_checkpoint = spy  # type: ignore[method-assign]
    handle = begin(store, clock)
    cp = Checkpoint(run_id="r1")
    handle.save(step(cp, "1"))
    handle.save(step(cp, "2"))
    cp.critic_state["fired"] = True
    handle.save(step(cp, "3"))
    assert "completed_phases" in seen[0] and "format_version" in seen[0]
    assert seen[1] == {"iteration", "updated_at"}
    assert seen[2] == {"iteration", "updated_at", "critic_state"}
    loaded = store.load_checkpoint("r1")
    assert loaded is not None and loaded.iteration == 3 and loaded.critic_state == {"fired": True}


def test_ownership_lost_propagates_from_save(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock)
    store.interrupt("r1", fence=handle.fence, now=clock.now())
    begin(store, clock)  # a new owner claims the run
    with pytest.raises(OwnershipLost):
        handle.save(Checkpoint(run_id="r1", messages=msgs(1)))


def test_interrupt_flushes_the_throttled_state_first(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock, throttle_ms=60_000)
    cp = Checkpoint(run_id="r1")
    handle.save(step(cp, "1"))
    handle.save(step(cp, "2"))
    handle.save(step(cp, "3"))
    handle.interrupt(cp)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    loaded = store.load_checkpoint("r1")
    assert loaded is not None and loaded.messages == cp.messages and loaded.iteration == 3


def test_complete_sends_the_unsaved_tail(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock, throttle_ms=60_000)
    cp = Checkpoint(run_id="r1")
    handle.save(step(cp, "1"))
    handle.save(step(cp, "2"))
    handle.complete(step(cp, "3"), output="done 3")
    assert store.sent[-1] == ("finish", 1, 2)
    record = store.get("r1")
    assert record is not None and (record.status, record.output) == ("completed", "done 3")
    assert [m.content for m in store.transcript("r1")] == ["1", "2", "3"]
    assert store.load_checkpoint("r1") is None


@pytest.mark.parametrize(
    ("call", "status"),
    [("fail", RunStatus.FAILED), ("cancel", RunStatus.CANCELLED)],
)
def test_fail_and_cancel_finish_the_run(
    store: SpyStore, clock: FakeClock, call: str, status: RunStatus
) -> None:
    handle = begin(store, clock)
    cp = step(Checkpoint(run_id="r1"), "1")
    if call == "fail":
        handle.fail(cp, "boom")
    else:
        handle.cancel(cp)
    record = store.get("r1")
    assert record is not None and record.status is status
    assert record.error == ("boom" if call == "fail" else None)
    assert store.transcript("r1") == cp.messages


def _resumed(store: SpyStore, clock: FakeClock, stored: Sequence[Message]) -> RunHandle:
    first = begin(store, clock)
    first.save(Checkpoint(run_id="r1", messages=list(stored), phase_start=4))
    first.interrupt(Checkpoint(run_id="r1", messages=list(stored), phase_start=4))
    store.sent.clear()
    return begin(store, clock)


def test_load_sets_persisted_len_and_resume_appends(store: SpyStore, clock: FakeClock) -> None:
    handle = _resumed(store, clock, msgs(6))
    cp = handle.load()
    assert cp is not None and handle.persisted_len == 6
    handle.save(step(cp, "7"))
    assert store.sent == [("save", 6, 1)]


def test_phased_resume_truncates_to_the_phase_start(store: SpyStore, clock: FakeClock) -> None:
    handle = _resumed(store, clock, msgs(6))
    cp = handle.load()
    assert cp is not None
    del cp.messages[cp.phase_start :]  # the phase re-runs from its start
    step(cp, "redo 5")
    handle.save(step(cp, "redo 6"))
    handle.save(step(cp, "redo 7"))
    assert store.sent == [("save", 4, 2), ("save", 6, 1)]
    contents = [m.content for m in store.transcript("r1")]
    assert contents == ["step 1", "step 2", "step 3", "step 4", "redo 5", "redo 6", "redo 7"]


def test_a_shorter_transcript_is_trimmed(store: SpyStore, clock: FakeClock) -> None:
    handle = _resumed(store, clock, msgs(6))
    cp = handle.load()
    assert cp is not None
    del cp.messages[4:]
    handle.save(cp)
    assert store.sent == [("save", 4, 0)]
    assert store.transcript("r1") == msgs(4)


def test_a_rebuilt_but_equal_list_resends_nothing(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock)
    handle.save(Checkpoint(run_id="r1", messages=msgs(5)))
    handle.save(Checkpoint(run_id="r1", messages=[m.model_copy() for m in msgs(5)]))
    assert store.sent == [("save", 0, 5), ("save", 5, 0)]


def test_load_without_checkpoint_starts_empty(store: SpyStore, clock: FakeClock) -> None:
    handle = begin(store, clock)
    assert handle.load() is None and handle.persisted_len == 0


def test_first_claim_skips_the_load_round_trip_and_later_claims_load(
    store: SpyStore, clock: FakeClock
) -> None:
    loads: list[str] = []
    original = store.load_checkpoint

    def counting_load(run_id: str) -> Checkpoint | None:
        loads.append(run_id)
        return original(run_id)

    store.load_checkpoint = counting_load  # type: ignore[method-assign]
    factory = StoreCheckpointerFactory(store, clock=clock)
    store.register(request(), run_id="r1", queue="executus", now=clock.now())
    first = store.claim("r1", owner="w", lease_ttl_s=30, max_attempts=5, now=clock.now())
    assert first.fence is not None
    handle = factory.begin(
        RunInfo(run_id="r1", agent="demo.counter", epoch=first.epoch, fence=first.fence.token),
        StopToken(),
    )
    assert handle is not None
    assert handle.load() is None
    assert loads == []
    handle.save(Checkpoint(run_id="r1", epoch=first.epoch, iteration=1, messages=msgs(1)))
    handle.interrupt(Checkpoint(run_id="r1", epoch=first.epoch, iteration=1, messages=msgs(1)))
    second = store.claim("r1", owner="w", lease_ttl_s=30, max_attempts=5, now=clock.now())
    assert second.fence is not None
    resumed = factory.begin(
        RunInfo(run_id="r1", agent="demo.counter", epoch=second.epoch, fence=second.fence.token),
        StopToken(),
    )
    assert resumed is not None
    loaded = resumed.load()
    assert loads == ["r1"]
    assert loaded is not None and len(loaded.messages) == 1


# -- an attempt that could not read what is stored writes nothing over it ---------------------


def stored_three(store: SpyStore, clock: FakeClock) -> None:
    first = begin(store, clock)
    cp = Checkpoint(run_id="r1")
    for text in ("1", "2", "3"):
        first.save(step(cp, text), force=True)
    first.interrupt(cp)


def test_a_failed_load_then_a_failure_keeps_the_stored_checkpoint(
    store: SpyStore, clock: FakeClock
) -> None:
    stored_three(store, clock)
    store._runs["r1"].ckpt["msg_count"] = "5"  # type: ignore[index]
    handle = begin(store, clock)
    with pytest.raises(CorruptCheckpointError):
        handle.load()
    handle.fail(Checkpoint(run_id="r1"), "unreadable")
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.FAILED
    assert [m.content for m in store.transcript("r1")] == ["1", "2", "3"]
    assert store._runs["r1"].ckpt is not None  # kept (it expires with the record)


def test_a_stop_during_the_load_releases_without_writing_an_empty_state(
    store: SpyStore, clock: FakeClock
) -> None:
    stored_three(store, clock)
    stop = StopToken()
    handle = begin(store, clock, stop=stop)
    stop.request(StopReason.SHUTDOWN, "deploy")
    original = store.load_checkpoint
    store.load_checkpoint = lambda run_id: (_ for _ in ()).throw(StoreError("down"))  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        handle.load()  # gives up after the write patience: a stop is pending
    store.load_checkpoint = original  # type: ignore[method-assign]
    sent = len(store.sent)
    handle.interrupt(Checkpoint(run_id="r1"))
    assert len(store.sent) == sent  # no save of the empty state
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert [m.content for m in store.transcript("r1")] == ["1", "2", "3"]
