"""Bad messages and bad records meet RunHandler: the stored record is the truth, a bad message
never touches a valid run, and every run a message names ends up with a record that says what
went wrong. On the in-memory store; tests/e2e/test_hostile_messages.py does it for real."""

from __future__ import annotations

import json
from typing import Any

import pytest

from executus_worker.checkpoint import memory
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    OutcomeKind,
    RunRequest,
    RunStatus,
)
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.worker.messages import REJECTED

from .test_runs import Clock, counter, enqueue, make_handler


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def drain() -> StopToken:
    return StopToken()


def deep(levels: int) -> str:
    return '{"agent":"demo.counter","input":{"x":' + "[" * levels + "]" * levels + "}}"


def interrupted_after(store: MemoryStore, clock: Clock, steps: int) -> list[Any]:
    """r1 (6 steps) interrupted by a shutdown once ``steps`` steps are checkpointed."""
    args = enqueue(store, counter(steps=6), clock)
    drain = StopToken()

    class Observer:
        def on_step(self, run: Any, iteration: int, new: Any) -> None:
            if iteration >= steps:
                drain.request(StopReason.SHUTDOWN, "test")

    handler = make_handler(store, drain, clock)
    handler._deps = type(handler._deps)(checkpoints=handler._deps.checkpoints, observer=Observer())
    assert handler.handle(args, {}).outcome is OutcomeKind.INTERRUPTED
    return args


def contents(store: MemoryStore, run_id: str) -> list[str]:
    return [m.content for m in store.transcript(run_id)]


# -- a bad duplicate never touches a valid run -------------------------------------------------


@pytest.mark.parametrize(
    "bad_body",
    [
        json.dumps({"agent": "demo.counter", "input": {"steps": 6}, "surprise": 1}),
        "x" * 300_000,
        deep(50_000),
        "{not json",
    ],
    ids=["extra-field", "oversized", "deeply-nested", "not-json"],
)
def test_a_bad_duplicate_of_an_interrupted_run_resumes_it_exactly(
    store: MemoryStore, drain: StopToken, clock: Clock, bad_body: str
) -> None:
    interrupted_after(store, clock, 3)
    handler = make_handler(store, drain, clock)
    result = handler.handle(["r1", bad_body], {})
    assert (result.action, result.outcome) == ("executed", OutcomeKind.COMPLETED)
    assert contents(store, "r1") == [f"step {i}" for i in range(1, 7)]


def test_a_bad_duplicate_of_a_running_run_is_a_duplicate(store, drain, clock) -> None:
    enqueue(store, counter(), clock)
    store.claim("r1", owner="other:2", lease_ttl_s=30, max_attempts=5, now=clock())
    handler = make_handler(store, drain, clock)
    result = handler.handle(["r1", deep(100_000)], {})
    assert (result.action, result.detail) == ("duplicate", "busy")
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.RUNNING and record.error is None


def test_a_bad_duplicate_of_a_finished_run_changes_nothing(store, drain, clock) -> None:
    args = enqueue(store, counter(), clock)
    make_handler(store, drain, clock).handle(args, {})
    result = make_handler(store, drain, clock).handle(["r1", "{}"], {})
    assert (result.action, result.detail) == ("duplicate", "gone")
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.COMPLETED and record.error is None


# -- runs seen first in a bad message are recorded failed ------------------------------------


def test_a_deeply_nested_request_fails_its_run_instead_of_recursing(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    as_text = handler.handle(["deep-text", deep(100_000)], {})
    as_dict = handler.handle(["deep-dict", {"agent": "demo.counter", "input": {"x": nested}}], {})
    for run_id, result in (("deep-text", as_text), ("deep-dict", as_dict)):
        assert result.action == "failed"
        record = store.get(run_id)
        assert record is not None and record.status is RunStatus.FAILED
        assert record.error is not None and "nests deeper than 100 levels" in record.error


def test_a_numeric_run_id_fails_the_run_named_by_its_digits(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle([424242, counter(run_id="x").to_json()], {})
    assert (result.action, result.run_id) == ("failed", "424242")
    record = store.get("424242")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error is not None and "must be a string" in record.error


def test_a_message_without_a_run_id_fails_the_run_of_its_task_id(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle([], {}, task_id="task-9")
    assert (result.action, result.run_id) == ("failed", "task-9")
    record = store.get("task-9")
    assert record is not None and record.error == "the message carries no run request"


def test_a_transport_notice_fails_an_unknown_run_and_wakes_a_known_one(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    unknown = handler.handle(["n1"], {REJECTED: "no delivery_tag"})
    assert unknown.action == "failed"
    record = store.get("n1")
    assert record is not None and record.error == "malformed message: no delivery_tag"
    enqueue(store, counter(run_id="n2"), clock)
    known = handler.handle(["n2"], {REJECTED: "no delivery_tag"})
    assert known.outcome is OutcomeKind.COMPLETED


def test_a_rejected_first_message_never_executes_its_placeholder(store, drain, clock) -> None:
    """A valid message racing the rejected one claims the rejected record: it fails it too."""
    handler = make_handler(store, drain, clock)
    store.register(
        RunRequest(run_id="race", agent="demo.counter"),
        run_id="race", queue="executus", now=clock(), rejected="invalid run request: bogus",
    )  # fmt: skip
    result = handler.handle(["race", counter(run_id="race").to_json()], {})
    assert result.action == "failed"
    record = store.get("race")
    assert record is not None and record.error == "invalid run request: bogus"
    assert store.transcript("race") == []


# -- bad records ---------------------------------------------------------------------------------


def test_a_stored_request_from_a_newer_client_fails_with_the_reason(store, drain, clock) -> None:
    args = enqueue(store, counter(), clock)
    stored = json.loads(store._runs["r1"].rec["request"])
    store._runs["r1"].rec["request"] = json.dumps({**stored, "budget_usd": 3})
    record = store.get("r1")  # readable, and says why it cannot run
    assert record is not None and record.request_error is not None
    assert record.request.agent == "demo.counter"
    handler = make_handler(store, drain, clock)
    result = handler.handle(args, {})
    assert (result.action, result.outcome) == ("failed", OutcomeKind.FAILED)
    failed = store.get("r1")
    assert failed is not None and failed.status is RunStatus.FAILED
    assert failed.error is not None and "budget_usd" in failed.error
    assert "newer client" in failed.error


def test_a_claimed_record_that_does_not_decode_is_failed_not_stuck(store, drain, clock) -> None:
    args = enqueue(store, counter(), clock)
    store._runs["r1"].rec["created_at"] = "yesterday"
    result = make_handler(store, drain, clock).handle(args, {})
    assert result.action == "failed" and "created_at" in result.detail
    assert store._runs["r1"].rec["status"] == "failed"


def test_a_checkpoint_of_a_newer_format_is_parked_and_kept(
    store, drain, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = interrupted_after(store, clock, 2)
    store._runs["r1"].ckpt["format_version"] = str(CHECKPOINT_FORMAT_VERSION + 1)  # type: ignore[index]
    kept = dict(store._runs["r1"].ckpt or {}), list(store._runs["r1"].msgs)
    handler = make_handler(store, drain, clock)

    parked = handler.handle(args, {})
    assert (parked.action, parked.outcome) == ("parked", OutcomeKind.PARKED)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert record.needs_format == CHECKPOINT_FORMAT_VERSION + 1
    assert record.last_reason is not None and "upgrade the worker" in record.last_reason
    assert (dict(store._runs["r1"].ckpt or {}), list(store._runs["r1"].msgs)) == kept

    # Older workers no longer claim it: no write, no attempt, no hot loop.
    again = handler.handle(args, {})
    assert again.action == "deferred"
    assert store.get("r1").attempts == record.attempts  # type: ignore[union-attr]
    assert handler.counts["parked"] == 1 and handler.counts["deferred"] == 1

    # A worker that reads the format claims it (the checkpoint is untouched for it).
    monkeypatch.setattr(memory, "CHECKPOINT_FORMAT_VERSION", CHECKPOINT_FORMAT_VERSION + 1)
    claim = store.claim("r1", owner="new:1", lease_ttl_s=30, max_attempts=5, now=clock())
    assert claim.fence is not None and store._runs["r1"].msgs == kept[1]


def test_parking_never_counts_toward_dead(store, drain, clock) -> None:
    args = enqueue(store, counter(), clock)
    for _ in range(5):  # five workers found a newer checkpoint, each parked it
        claim = store.claim("r1", owner="x:1", lease_ttl_s=30, max_attempts=2, now=clock())
        assert claim.fence is not None
        store.park("r1", fence=claim.fence, now=clock(), reason="newer", needs_format=0)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    result = make_handler(store, drain, clock, max_recovery_attempts=2).handle(args, {})
    assert result.outcome is OutcomeKind.COMPLETED


def test_a_corrupt_checkpoint_fails_the_run_and_keeps_what_is_stored(store, drain, clock) -> None:
    args = interrupted_after(store, clock, 3)
    store._runs["r1"].ckpt["msg_count"] = "7"  # type: ignore[index]
    kept = dict(store._runs["r1"].ckpt or {}), list(store._runs["r1"].msgs)
    result = make_handler(store, drain, clock).handle(args, {})
    assert (result.action, result.outcome) == ("executed", OutcomeKind.FAILED)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error is not None and "counts 7" in record.error
    assert (dict(store._runs["r1"].ckpt or {}), list(store._runs["r1"].msgs)) == kept
