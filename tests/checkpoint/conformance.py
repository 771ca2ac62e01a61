"""The checkpoint store conformance spec: one plain test per guarantee, run on every backend.

Each function takes the ``store`` fixture (and ``backend`` where it must do something the port
cannot, like expiring a lease the way a crash does). ``test_conformance.py`` collects them
against MemoryStore, RedisStore on fakeredis and RedisStore on a private real Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from executus_worker.checkpoint.handle import RunHandle
from executus_worker.checkpoint.store import ClaimStatus, Fence, RenewStatus, RunStore, SaveAck
from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    Message,
    RunRequest,
    RunStatus,
    ToolCall,
)
from executus_worker.core.stop import OwnershipLost
from executus_worker.errors import (
    CorruptCheckpointError,
    RunNotFoundError,
    TranscriptBehind,
)

from .conftest import Backend

NOW = 1_700_000_000.0
TTL_S = 3_600
LEASE_S = 30.0


def request(agent: str = "demo.counter", **input: Any) -> RunRequest:
    return RunRequest(agent=agent, input=input or {"steps": 3})


def msgs(n: int, prefix: str = "step", start: int = 1) -> list[Message]:
    return [Message(role="assistant", content=f"{prefix} {i}") for i in range(start, start + n)]


def registered(store: RunStore, run_id: str = "r1", now: float = NOW) -> str:
    store.register(request(), run_id=run_id, queue="executus", now=now)
    return run_id


def claimed(store: RunStore, run_id: str = "r1", owner: str = "w1", max_attempts: int = 5) -> Fence:
    result = store.claim(
        run_id, owner=owner, lease_ttl_s=LEASE_S, max_attempts=max_attempts, now=NOW + 1
    )
    assert result.status is ClaimStatus.CLAIMED, result
    assert result.fence is not None and result.fence.epoch == result.epoch
    return result.fence


def save(
    store: RunStore,
    run_id: str,
    fence: Fence,
    base_len: int,
    new: Sequence[Message],
    **meta: Any,
) -> SaveAck:
    cp = Checkpoint(run_id=run_id, epoch=fence.epoch, **meta)
    return store.save_checkpoint(
        run_id, fence=fence, base_len=base_len, new_messages=new, checkpoint=cp, now=NOW + 2
    )


def finish(store: RunStore, run_id: str, fence: Fence, status: RunStatus, **kw: Any) -> None:
    args: dict[str, Any] = {"output": None, "error": None, "base_len": 0, "new_messages": []}
    args.update(kw)
    store.finish(run_id, fence=fence, status=status, now=NOW + 3, result_ttl_s=TTL_S, **args)


# --------------------------------------------------------------------------- records


def test_register_creates_a_queued_indexed_record(store: RunStore) -> None:
    """register creates a queued record with the request, queue and zero attempts."""
    record, created = store.register(request(), run_id="r1", queue="q1", now=NOW)
    assert created
    assert (record.status, record.queue, record.attempts, record.epoch) == ("queued", "q1", 0, 0)
    assert record.request == request()
    assert store.get("r1") == record
    assert [r.run_id for r in store.list_runs(status=RunStatus.QUEUED)] == ["r1"]


def test_register_is_idempotent(store: RunStore) -> None:
    """A second register with the same run id returns the existing run unchanged."""
    first, _ = store.register(request(), run_id="r1", queue="q1", now=NOW)
    epoch = claimed(store)
    again, created = store.register(request("other.agent"), run_id="r1", queue="q2", now=NOW + 9)
    assert not created
    assert again.status is RunStatus.RUNNING and again.epoch == epoch.epoch
    assert again.request == first.request and again.queue == "q1"


def test_get_unknown_run_is_none(store: RunStore) -> None:
    """get of an unknown run id returns None."""
    assert store.get("nope") is None


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(store: RunStore) -> None:
    """Everything saved in a checkpoint loads back equal."""
    epoch = claimed(store, registered(store))
    messages = [
        Message(role="user", content="hi ☃"),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="c1", name="search", arguments={"q": "x", "n": 2}),),
        ),
        Message(role="tool", tool_call_id="c1", name="search", content='{"hits": []}'),
    ]
    meta: dict[str, Any] = {
        "iteration": 7,
        "active_phase": "work",
        "phase_start": 1,
        "completed_phases": ["plan"],
        "phase_outputs": {"plan": {"items": [1, 2.5, None, "a"]}},
        "critic_state": {"strikes": 1},
    }
    save(store, "r1", epoch, 0, messages, **meta)
    loaded = store.load_checkpoint("r1")
    assert loaded is not None
    assert loaded.model_dump(exclude={"updated_at"}) == Checkpoint(
        run_id="r1", epoch=epoch.epoch, messages=messages, **meta
    ).model_dump(exclude={"updated_at"})
    assert loaded.format_version == CHECKPOINT_FORMAT_VERSION
    assert loaded.updated_at == NOW + 2


def test_no_checkpoint_before_the_first_save(store: RunStore) -> None:
    """load_checkpoint is None for a run that never saved and for an unknown run."""
    claimed(store, registered(store))
    assert store.load_checkpoint("r1") is None
    assert store.load_checkpoint("unknown") is None


def test_saves_append_only_the_new_messages(store: RunStore, backend: Backend) -> None:
    """The stored transcript grows by exactly the new messages of each save."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(3))
    assert backend.stored_len("r1") == 3
    save(store, "r1", epoch, 3, msgs(2, start=4))
    assert backend.stored_len("r1") == 5
    save(store, "r1", epoch, 5, [])
    assert store.transcript("r1") == msgs(5)


def test_one_step_on_a_long_transcript_sends_one_message(store: RunStore) -> None:
    """Through a RunHandle, a step on a 5,000-message transcript sends only its new message."""
    epoch = claimed(store, registered(store))
    sent: list[tuple[int, int]] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def save_checkpoint(self, run_id: str, **kw: Any) -> SaveAck:
            sent.append((kw["base_len"], len(kw["new_messages"])))
            return store.save_checkpoint(run_id, **kw)

    handle = RunHandle(Spy(), "r1", epoch)  # type: ignore[arg-type]
    cp = Checkpoint(run_id="r1", messages=msgs(5_000))
    assert handle.save(cp)
    cp.messages.append(Message(role="assistant", content="one more"))
    assert handle.save(cp)
    assert sent == [(0, 5_000), (5_000, 1)]
    assert len(store.transcript("r1")) == 5_001


def test_base_len_below_stored_truncates_then_appends(store: RunStore) -> None:
    """A save with base_len shorter than the stored list keeps that prefix (phased resume)."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(6))
    save(store, "r1", epoch, 4, msgs(1, prefix="redo"))
    assert store.transcript("r1") == [*msgs(4), *msgs(1, prefix="redo")]
    save(store, "r1", epoch, 0, [])
    assert store.transcript("r1") == []


def test_message_text_that_looks_like_a_separator_survives_truncation(store: RunStore) -> None:
    """Newlines, commas and brackets inside messages never confuse message boundaries."""
    epoch = claimed(store, registered(store))
    tricky = [Message(role="user", content=c) for c in ("a\n,b", "\n,\n,", "],[", '"\\n,"')]
    save(store, "r1", epoch, 0, tricky)
    save(store, "r1", epoch, 2, msgs(1))
    assert store.transcript("r1") == [*tricky[:2], *msgs(1)]
    loaded = store.load_checkpoint("r1")
    assert loaded is not None and loaded.messages == [*tricky[:2], *msgs(1)]


def test_base_len_beyond_stored_is_corrupt(store: RunStore) -> None:
    """A save expecting more stored messages than exist raises CorruptCheckpointError."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(2))
    with pytest.raises(CorruptCheckpointError, match="r1"):
        save(store, "r1", epoch, 3, msgs(1))
    assert store.transcript("r1") == msgs(2)


# --------------------------------------------------------------------------- fencing


def test_foreign_fence_writes_are_fenced(store: RunStore) -> None:
    """save, finish and interrupt with another claim's fence raise OwnershipLost and change
    nothing -- also when that fence carries the current epoch (Redis forgot a claim and handed
    the same epoch out twice: only the random token tells the two owners apart)."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(2))
    same_epoch = Fence.new(epoch.epoch)
    with pytest.raises(OwnershipLost):
        save(store, "r1", same_epoch, 2, msgs(1, start=3))
    with pytest.raises(OwnershipLost):
        finish(store, "r1", same_epoch, RunStatus.COMPLETED)
    with pytest.raises(OwnershipLost):
        store.interrupt("r1", fence=same_epoch, now=NOW)
    assert store.transcript("r1") == msgs(2)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.RUNNING


def test_reclaim_after_lease_expiry_fences_the_first_owner(
    store: RunStore, backend: Backend
) -> None:
    """A claim after the lease expired bumps the epoch; the first owner can no longer write."""
    first = claimed(store, registered(store), owner="w1")
    save(store, "r1", first, 0, msgs(1))
    backend.expire_lease("r1")
    second = claimed(store, "r1", owner="w2")
    assert second.epoch == first.epoch + 1 and second.token != first.token
    with pytest.raises(OwnershipLost):
        save(store, "r1", first, 1, msgs(1, start=2))
    assert store.renew("r1", fence=first, lease_ttl_s=LEASE_S) is RenewStatus.LOST
    save(store, "r1", second, 1, msgs(1, start=2))
    assert store.transcript("r1") == msgs(2)


def test_writes_after_finish_are_fenced(store: RunStore) -> None:
    """Once a run finished, even its own epoch can no longer save."""
    epoch = claimed(store, registered(store))
    finish(store, "r1", epoch, RunStatus.COMPLETED)
    with pytest.raises(OwnershipLost):
        save(store, "r1", epoch, 0, msgs(1))


# --------------------------------------------------------------------------- claim outcomes


def test_claim_while_lease_is_live_is_busy(store: RunStore) -> None:
    """A duplicate delivery while the owner's lease is live gets BUSY and changes nothing."""
    epoch = claimed(store, registered(store), owner="w1")
    result = store.claim("r1", owner="w2", lease_ttl_s=LEASE_S, max_attempts=5, now=NOW)
    assert result.status is ClaimStatus.BUSY
    record = store.get("r1")
    assert record is not None
    assert (record.epoch, record.owner, record.attempts) == (epoch.epoch, "w1", 1)


def test_claim_of_unknown_or_finished_run_is_gone(store: RunStore) -> None:
    """Claiming an unknown or terminal run returns GONE."""
    assert store.claim("nope", owner="w", lease_ttl_s=1, max_attempts=5, now=NOW).status == "gone"
    epoch = claimed(store, registered(store))
    finish(store, "r1", epoch, RunStatus.COMPLETED, output="ok")
    result = store.claim("r1", owner="w", lease_ttl_s=1, max_attempts=5, now=NOW)
    assert result.status is ClaimStatus.GONE


def test_claim_sets_owner_epoch_attempts_and_started_at(store: RunStore) -> None:
    """A successful claim returns the new epoch, the attempt count and the running record."""
    registered(store)
    result = store.claim("r1", owner="w1", lease_ttl_s=LEASE_S, max_attempts=5, now=NOW + 5)
    assert (result.status, result.epoch, result.attempts) == (ClaimStatus.CLAIMED, 1, 1)
    assert result.record is not None
    assert result.record.status is RunStatus.RUNNING
    assert (result.record.owner, result.record.started_at) == ("w1", NOW + 5)


def test_claim_of_a_run_with_pending_cancel_cancels_it(store: RunStore, backend: Backend) -> None:
    """A run whose cancel was requested while running is cancelled by the next claim."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(2))
    assert store.request_cancel("r1", now=NOW).cancel_requested
    store.interrupt("r1", fence=epoch, now=NOW)
    result = store.claim("r1", owner="w2", lease_ttl_s=LEASE_S, max_attempts=5, now=NOW)
    assert result.status is ClaimStatus.CANCELLED
    assert result.record is not None and result.record.status is RunStatus.CANCELLED
    assert store.load_checkpoint("r1") is None
    assert store.list_runs(status=RunStatus.CANCELLED)[0].run_id == "r1"


def test_crashing_run_becomes_dead_after_max_attempts(store: RunStore, backend: Backend) -> None:
    """Each crashed attempt counts. The takeover in the very claim being decided gets the
    benefit of the doubt (its owner may still refund it), so a run that crashes on every
    attempt is dead at the claim after max_attempts + 1 crashed attempts."""
    registered(store)
    for attempt in range(1, 5):
        result = store.claim(
            "r1", owner=f"w{attempt}", lease_ttl_s=LEASE_S, max_attempts=3, now=NOW + 100 * attempt
        )
        assert result.status is ClaimStatus.CLAIMED and result.epoch == attempt, result
        backend.expire_lease("r1")  # the worker was killed
    result = store.claim("r1", owner="w5", lease_ttl_s=LEASE_S, max_attempts=3, now=NOW + 500)
    assert result.status is ClaimStatus.DEAD
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.DEAD
    assert record.error is not None and record.error.startswith("gave up after 4 attempts: ")
    assert "lease expired" in record.error
    assert record.finished_at is not None
    assert store.list_runs(status=RunStatus.DEAD)[0].run_id == "r1"
    assert store.list_runs(status=RunStatus.RUNNING) == []


def test_a_fresh_takeover_is_not_counted_until_its_owner_could_have_refunded(
    store: RunStore, backend: Backend
) -> None:
    """An owner cut off longer than its lease is replaced, and the next claim usually comes
    before that owner is back to refund: within the grace the takeover does not count, so a
    run with max_attempts=1 survives one outage; a dead owner's takeover counts afterwards."""
    registered(store)
    first = store.claim("r1", owner="a", lease_ttl_s=LEASE_S, max_attempts=1, now=NOW)
    assert first.fence is not None
    backend.expire_lease("r1")
    second = store.claim("r1", owner="b", lease_ttl_s=LEASE_S, max_attempts=1, now=NOW + 1)
    assert second.status is ClaimStatus.CLAIMED  # a's takeover is still refundable
    assert store.refund("r1", fence=first.fence)  # a was alive
    backend.expire_lease("r1")  # now b really dies
    third = store.claim("r1", owner="c", lease_ttl_s=LEASE_S, max_attempts=1, now=NOW + 2)
    assert third.status is ClaimStatus.CLAIMED  # b's takeover: still within the grace
    backend.expire_lease("r1")  # c dies too; b never refunded: b's crash now counts
    fourth = store.claim("r1", owner="d", lease_ttl_s=LEASE_S, max_attempts=1, now=NOW + 500)
    assert fourth.status is ClaimStatus.DEAD


def test_a_replaced_owner_that_survived_does_not_count_toward_dead(
    store: RunStore, backend: Backend
) -> None:
    """Takeovers of owners that prove they are alive (refund) are not crashes: a run whose
    leases lapse in outages and partitions never becomes dead for it; real crashes still do."""
    registered(store)
    for attempt in range(1, 6):
        fence = claimed(store, "r1", owner=f"w{attempt}", max_attempts=2)
        backend.expire_lease("r1")  # partitioned, stalled, or Redis was down past the TTL
        nxt = store.claim("r1", owner="x", lease_ttl_s=LEASE_S, max_attempts=2, now=NOW)
        assert nxt.status is ClaimStatus.CLAIMED, (attempt, nxt)
        assert nxt.fence is not None
        assert store.refund("r1", fence=fence)  # the replaced owner is alive
        assert not store.refund("r1", fence=fence)  # once only
        store.interrupt("r1", fence=nxt.fence, now=NOW)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    # Nothing to refund for a claim that was never taken over.
    assert not store.refund("r1", fence=Fence.new(1))
    # Real crashes (nobody refunds) still end it: with max_attempts=2, the claim after the
    # third (the last one's takeover gets the benefit of the doubt).
    for i in range(3):
        crashed = store.claim(
            "r1", owner="z", lease_ttl_s=LEASE_S, max_attempts=2, now=NOW + 1000 * (i + 1)
        )
        assert crashed.status is ClaimStatus.CLAIMED
        backend.expire_lease("r1")
    dead = store.claim("r1", owner="y", lease_ttl_s=LEASE_S, max_attempts=2, now=NOW + 5000)
    assert dead.status is ClaimStatus.DEAD


def test_save_reply_carries_the_cancel_flag(store: RunStore) -> None:
    """A cancel requested while the run is running rides on the next save's reply."""
    fence = claimed(store, registered(store))
    assert save(store, "r1", fence, 0, msgs(1)) == SaveAck(1, False)
    store.request_cancel("r1", now=NOW)
    assert save(store, "r1", fence, 1, msgs(1, start=2)) == SaveAck(2, True)


def test_a_short_transcript_is_reported_as_behind(store: RunStore, backend: Backend) -> None:
    """A fenced write whose base_len exceeds what is stored raises TranscriptBehind (Redis lost
    writes while the claim survived) and changes nothing."""
    fence = claimed(store, registered(store))
    save(store, "r1", fence, 0, msgs(2))
    with pytest.raises(TranscriptBehind):
        save(store, "r1", fence, 5, msgs(1, start=6))
    assert store.transcript("r1") == msgs(2)


def test_a_forgotten_last_write_is_reported_as_behind(store: RunStore) -> None:
    """The writer names the last write it made; if the store holds another (it forgot a write
    that added no messages, e.g. a phase boundary), the write is refused, nothing changes."""
    fence = claimed(store, registered(store))
    cp = Checkpoint(run_id="r1", epoch=fence.epoch)
    args: dict[str, Any] = {"fence": fence, "checkpoint": cp, "now": NOW}
    store.save_checkpoint("r1", base_len=0, new_messages=msgs(1), seq="a:1", **args)
    store.save_checkpoint("r1", base_len=1, new_messages=[], expect_seq="a:1", seq="a:2", **args)
    with pytest.raises(TranscriptBehind):
        store.save_checkpoint(
            "r1", base_len=1, new_messages=msgs(1), expect_seq="a:1", seq="a:3", **args
        )
    with pytest.raises(TranscriptBehind):
        store.finish(
            "r1", fence=fence, status=RunStatus.COMPLETED, output=None, error=None, base_len=1,
            new_messages=[], now=NOW, result_ttl_s=TTL_S, expect_seq="a:1",
        )  # fmt: skip
    loaded = store.load_checkpoint("r1")
    assert loaded is not None and loaded.write_seq == "a:2" and loaded.messages == msgs(1)


def test_clean_interrupts_do_not_count_toward_dead(store: RunStore) -> None:
    """A run interrupted by warm shutdowns many times is never declared dead for it."""
    registered(store)
    for _ in range(6):
        epoch = claimed(store, "r1", max_attempts=2)
        store.interrupt("r1", fence=epoch, now=NOW)
    record = store.get("r1")
    assert record is not None and record.attempts == 6 and record.status is RunStatus.INTERRUPTED


# --------------------------------------------------------------------------- terminal cleanup


def test_complete_deletes_checkpoint_and_keeps_result_and_transcript(store: RunStore) -> None:
    """finish(completed) deletes the checkpoint, keeps output and the full final transcript."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(2))
    finish(store, "r1", epoch, RunStatus.COMPLETED, output={"answer": 42}, base_len=2,
           new_messages=msgs(1, start=3))  # fmt: skip
    assert store.load_checkpoint("r1") is None
    record = store.get("r1")
    assert record is not None
    assert (record.status, record.output, record.error) == ("completed", {"answer": 42}, None)
    assert record.finished_at == NOW + 3
    assert store.transcript("r1") == msgs(3)
    assert store.list_runs(status=RunStatus.RUNNING) == []
    assert [r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)] == ["r1"]


def test_fail_deletes_checkpoint_and_records_the_error(store: RunStore) -> None:
    """finish(failed) deletes the checkpoint and keeps the error and transcript."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(2))
    finish(store, "r1", epoch, RunStatus.FAILED, error="boom", base_len=2)
    assert store.load_checkpoint("r1") is None
    record = store.get("r1")
    assert record is not None and (record.status, record.error) == ("failed", "boom")
    assert store.transcript("r1") == msgs(2)


def test_finished_run_leaves_no_key_without_ttl(store: RunStore, backend: Backend) -> None:
    """After completed, failed, cancelled and dead runs, every per-run key has a TTL."""
    if backend.keys_without_ttl() is None:
        pytest.skip("TTLs are Redis keys; MemoryStore retention is tested in test_memory_store")
    for run_id, status in [("a", RunStatus.COMPLETED), ("b", RunStatus.FAILED)]:
        epoch = claimed(store, registered(store, run_id))
        save(store, run_id, epoch, 0, msgs(2))
        finish(store, run_id, epoch, status, base_len=2, new_messages=msgs(1, start=3))
    registered(store, "c")
    store.request_cancel("c", now=NOW)
    epoch = claimed(store, registered(store, "d"), max_attempts=1)
    save(store, "d", epoch, 0, msgs(1))
    backend.expire_lease("d")
    # A second crash: the first one's takeover is past its refund grace and counts.
    again = store.claim("d", owner="w", lease_ttl_s=1, max_attempts=1, now=NOW + 100)
    assert again.status is ClaimStatus.CLAIMED
    backend.expire_lease("d")
    assert (
        store.claim("d", owner="w", lease_ttl_s=1, max_attempts=1, now=NOW + 200).status == "dead"
    )
    assert backend.keys_without_ttl() == []


def test_interrupt_keeps_the_checkpoint_and_releases_the_lease(store: RunStore) -> None:
    """interrupt marks the run interrupted, keeps its checkpoint and frees it for a new claim."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(3), iteration=3)
    store.interrupt("r1", fence=epoch, now=NOW + 4)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert record.owner is None
    loaded = store.load_checkpoint("r1")
    assert loaded is not None and loaded.messages == msgs(3) and loaded.iteration == 3
    assert store.renew("r1", fence=epoch, lease_ttl_s=1) is RenewStatus.LOST
    again = claimed(store, "r1", owner="w2")  # not BUSY: the lease was released
    assert again.epoch == epoch.epoch + 1
    assert [r.run_id for r in store.list_runs(status=RunStatus.RUNNING)] == ["r1"]


def test_runs_are_isolated(store: RunStore) -> None:
    """Saves, finishes and cancels of one run never touch another."""
    ea = claimed(store, registered(store, "a"))
    eb = claimed(store, registered(store, "b"))
    save(store, "a", ea, 0, msgs(2, prefix="a"))
    save(store, "b", eb, 0, msgs(3, prefix="b"))
    finish(store, "a", ea, RunStatus.COMPLETED, base_len=2)
    assert store.transcript("b") == msgs(3, prefix="b")
    loaded = store.load_checkpoint("b")
    assert loaded is not None and loaded.messages == msgs(3, prefix="b")
    record = store.get("b")
    assert record is not None and record.status is RunStatus.RUNNING


def test_transcript_of_unknown_run_raises(store: RunStore) -> None:
    """transcript of a run that does not exist raises RunNotFoundError."""
    with pytest.raises(RunNotFoundError):
        store.transcript("nope")
    registered(store)
    assert store.transcript("r1") == []
