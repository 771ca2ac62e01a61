"""RunHandler: one delivery of executus.run, on the in-memory store, without Celery."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from executus_worker.checkpoint.handle import StoreCheckpointerFactory
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import OutcomeKind, RunRequest, RunStatus
from executus_worker.core.ports import Agent, Deps
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.settings import Settings
from executus_worker.worker.runs import RunHandler


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def drain() -> StopToken:
    return StopToken()


def make_handler(
    store: MemoryStore,
    drain: StopToken,
    clock: Clock,
    *,
    execute_fn: Any = execute,
    **settings: Any,
) -> RunHandler:
    s = Settings.model_construct(**{**Settings().model_dump(), **settings})
    return RunHandler(
        store=store,
        agents=AgentRegistry.with_builtins(),
        deps=Deps(checkpoints=StoreCheckpointerFactory(store)),
        settings=s,
        drain=drain,
        execute=execute_fn,
        owner=lambda: "host:1",
        clock=clock,
    )


def counter(run_id: str = "r1", steps: int = 3, **extra: Any) -> RunRequest:
    return RunRequest(run_id=run_id, agent="demo.counter", input={"steps": steps}, **extra)


def enqueue(store: MemoryStore, request: RunRequest, clock: Clock) -> list[Any]:
    assert request.run_id is not None
    store.register(request, run_id=request.run_id, queue="executus", now=clock())
    return [request.run_id, request.to_json()]


def test_a_registered_run_is_claimed_executed_and_completed(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle(enqueue(store, counter(), clock), {})
    assert (result.action, result.outcome) == ("executed", OutcomeKind.COMPLETED)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.COMPLETED
    assert record.output == "done 3"
    assert [m.content for m in store.transcript("r1")] == ["step 1", "step 2", "step 3"]


def test_an_unregistered_run_from_a_raw_send_task_is_registered_on_first_sight(
    store, drain, clock
) -> None:
    handler = make_handler(store, drain, clock)
    request = counter(run_id="raw1")
    result = handler.handle(["raw1", request.to_json()], {})
    assert result.outcome is OutcomeKind.COMPLETED
    assert store.get("raw1") is not None


def test_a_request_without_any_run_id_runs_under_the_task_id(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    request = RunRequest(agent="demo.counter", input={"steps": 1})
    result = handler.handle([request.to_json()], {}, task_id="task-123")
    assert (result.run_id, result.outcome) == ("task-123", OutcomeKind.COMPLETED)


def test_the_request_may_come_as_keyword_arguments_or_a_dict(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle([], {"run_id": "kw1", "request": counter("kw1").model_dump()})
    assert result.outcome is OutcomeKind.COMPLETED


def test_a_second_delivery_while_the_lease_is_live_is_a_counted_duplicate(
    store, drain, clock
) -> None:
    args = enqueue(store, counter(), clock)
    store.claim("r1", owner="other:2", lease_ttl_s=30, max_attempts=5, now=clock())
    handler = make_handler(store, drain, clock)
    result = handler.handle(args, {})
    assert (result.action, result.detail) == ("duplicate", "busy")
    assert handler.counts["duplicate"] == 1


def test_a_delivery_of_a_finished_run_is_a_duplicate_and_changes_nothing(
    store, drain, clock
) -> None:
    handler = make_handler(store, drain, clock)
    args = enqueue(store, counter(), clock)
    handler.handle(args, {})
    result = handler.handle(args, {})
    assert (result.action, result.detail) == ("duplicate", "gone")
    assert [m.content for m in store.transcript("r1")] == ["step 1", "step 2", "step 3"]


def test_a_run_cancelled_while_queued_never_starts(store, drain, clock) -> None:
    args = enqueue(store, counter(), clock)
    store.request_cancel("r1", now=clock())
    calls: list[str] = []
    handler = make_handler(store, drain, clock, execute_fn=lambda *a: calls.append("x"))
    result = handler.handle(args, {})
    assert result.action in {"cancelled", "duplicate"}
    assert calls == []
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.CANCELLED


def test_an_unknown_agent_fails_the_run_with_a_clear_error(store, drain, clock) -> None:
    request = RunRequest(run_id="u1", agent="no.such.agent")
    handler = make_handler(store, drain, clock)
    result = handler.handle(enqueue(store, request, clock), {})
    assert (result.action, result.outcome) == ("failed", OutcomeKind.FAILED)
    record = store.get("u1")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error is not None and "unknown agent 'no.such.agent'" in record.error


@pytest.mark.parametrize(
    ("request_json", "expected"),
    [
        ("{not json", "invalid run request"),
        (json.dumps({"agent": "demo.counter", "bogus": 1}), "bogus"),
        (json.dumps({"agent": "demo.counter", "schema_version": 99}), "schema_version"),
        (json.dumps(["a", "list"]), "invalid run request"),
        ("x" * 300_000, "byte limit"),
    ],
)
def test_a_bad_payload_with_a_run_id_fails_that_run_with_the_validation_message(
    store, drain, clock, request_json: str, expected: str
) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle(["bad1", request_json], {})
    assert (result.action, result.outcome) == ("failed", OutcomeKind.FAILED)
    record = store.get("bad1")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error is not None and expected in record.error


def test_a_bad_payload_keeps_the_agent_name_it_could_read(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    handler.handle(["bad2", json.dumps({"agent": "demo.counter", "input": 5})], {})
    record = store.get("bad2")
    assert record is not None and record.agent == "demo.counter"


def test_a_bad_payload_of_a_registered_run_delivers_the_stored_run(store, drain, clock) -> None:
    enqueue(store, counter(), clock)
    handler = make_handler(store, drain, clock)
    result = handler.handle(["r1", "{}"], {})
    assert result.outcome is OutcomeKind.COMPLETED
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.COMPLETED
    assert [m.content for m in store.transcript("r1")] == ["step 1", "step 2", "step 3"]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([], {}),
        ([None, None], {}),
        (["has space", "{}"], {}),
        ([{"agent": 1}], {}),
        ([True, "{}"], {}),
        ([], {"what": 1}),
    ],
)
def test_a_payload_without_a_usable_run_id_is_logged_and_dropped(
    store, drain, clock, args: list[Any], kwargs: dict[str, Any]
) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle(args, kwargs)
    assert result.action == "rejected"
    assert store.list_runs() == []


def test_a_run_id_that_disagrees_with_the_request_fails_the_run(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    result = handler.handle(["r9", counter(run_id="other").to_json()], {})
    assert result.outcome is OutcomeKind.FAILED
    record = store.get("r9")
    assert record is not None and record.error is not None and "does not match" in record.error


def test_a_drain_before_the_first_step_leaves_the_run_interrupted_not_lost(
    store, drain, clock
) -> None:
    drain.request(StopReason.SHUTDOWN)
    handler = make_handler(store, drain, clock)
    result = handler.handle(enqueue(store, counter(), clock), {})
    assert result.outcome is OutcomeKind.INTERRUPTED
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED


def test_the_run_token_is_linked_to_the_drain_token(store, drain, clock) -> None:
    seen: list[bool] = []

    def fake_execute(agent: Agent, run: Any, deps: Deps, stop: StopToken) -> Any:
        seen.append(stop.requested())
        drain.request(StopReason.SHUTDOWN)
        seen.append(stop.reason() is StopReason.SHUTDOWN)
        return execute(agent, run, deps, stop)

    handler = make_handler(store, drain, clock, execute_fn=fake_execute)
    handler.handle(enqueue(store, counter(), clock), {})
    assert seen == [False, True]


def test_attempts_past_the_limit_make_the_run_dead_with_the_reason(store, drain, clock) -> None:
    args = enqueue(store, counter(), clock)
    # Three attempts that crashed (claimed, then the lease ran out): with max 2, the last
    # takeover gets the benefit of the doubt (its owner could still prove it survived).
    for _ in range(3):
        store.claim("r1", owner="x:1", lease_ttl_s=1, max_attempts=2, now=clock())
        clock.t += 5
    handler = make_handler(store, drain, clock, max_recovery_attempts=2)
    result = handler.handle(args, {})
    assert result.action == "dead"
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.DEAD
    assert record.error is not None and "attempts" in record.error


def test_an_executor_that_raises_fails_the_run_with_what_it_raised(store, drain, clock) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("executor exploded")

    handler = make_handler(store, drain, clock, execute_fn=broken)
    result = handler.handle(enqueue(store, counter(), clock), {})
    assert (result.action, result.outcome) == ("failed", OutcomeKind.FAILED)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error is not None and "RuntimeError: executor exploded" in record.error


def test_a_broken_agent_factory_fails_the_run_with_its_message(store, drain, clock) -> None:
    handler = make_handler(store, drain, clock)
    registry = AgentRegistry.with_builtins()
    registry.register_factory("broken.agent", "no_such_module_here:make")
    handler._agents = registry
    request = RunRequest(run_id="b1", agent="broken.agent")
    result = handler.handle(enqueue(store, request, clock), {})
    assert result.outcome is OutcomeKind.FAILED
    record = store.get("b1")
    assert record is not None and record.error is not None
    assert "cannot import no_such_module_here" in record.error


def test_a_claim_made_on_receipt_is_taken_not_made_again(store, drain, clock) -> None:
    """worker/preclaim.py: the delivery's claim was made when this process received the
    message; the handler runs the attempt on it without claiming again."""
    args = enqueue(store, counter(steps=2), clock)
    early = store.claim("r1", owner="host:1", lease_ttl_s=30, max_attempts=5, now=clock())
    asked: list[tuple[str, str]] = []

    def preclaimed(run_id: str, owner: str) -> Any:
        asked.append((run_id, owner))
        return (early, time.monotonic()) if len(asked) == 1 else None

    handler = make_handler(store, drain, clock)
    handler._records.preclaimed = preclaimed
    result = handler.handle(args, {})
    assert (result.action, result.outcome) == ("executed", OutcomeKind.COMPLETED)
    assert asked == [("r1", "host:1")]
    record = store.get("r1")
    assert record is not None and record.attempts == 1 and record.epoch == 1
    assert [m.content for m in store.transcript("r1")] == ["step 1", "step 2"]
