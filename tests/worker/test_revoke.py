"""Celery's revoke cancels the run in the store (worker/revoke.py), on the in-memory store."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import RunStore
from executus_worker.core.models import RunRequest, RunStatus
from executus_worker.errors import StoreError
from executus_worker.publish import TASK_RUN
from executus_worker.worker.delivery import CANCELLED_MARK
from executus_worker.worker.revoke import RevokeHook

OUR_TASK = SimpleNamespace(name=TASK_RUN)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def hook(store: RunStore) -> RevokeHook:
    return RevokeHook(lambda: store, is_ours=lambda task: task is OUR_TASK)


def register(store: MemoryStore, run_id: str) -> None:
    request = RunRequest(run_id=run_id, agent="demo.counter")
    store.register(request, run_id=run_id, queue="executus", now=time.time())


def celery_revoke(calls: list[Any]) -> Any:
    """Our `revoke` command around a stand-in for Celery's."""

    def revoke(state: Any, task_id: Any, terminate: bool = False, **kwargs: Any) -> Any:
        calls.append((task_id, terminate))
        return {"ok": f"tasks {task_id} flagged as revoked"}

    def terminate(state: Any, signal: Any, task_id: Any, **kwargs: Any) -> Any:
        return revoke(state, task_id, terminate=True, signal=signal)

    return {"revoke": revoke, "terminate": terminate}


def commands(store: RunStore, calls: list[Any]) -> dict[str, Any]:
    return hook(store).commands(celery_revoke(calls))


def status(store: MemoryStore, run_id: str) -> RunStatus:
    record = store.get(run_id)
    assert record is not None
    return record.status


def test_revoking_a_queued_run_cancels_it_and_still_runs_celerys_revoke(
    store: MemoryStore,
) -> None:
    register(store, "r1")
    calls: list[Any] = []
    reply = commands(store, calls)["revoke"](None, "r1", terminate=True)
    assert status(store, "r1") is RunStatus.CANCELLED
    assert calls == [("r1", True)]
    assert reply["ok"].endswith("runs cancelled: r1")


def test_revoking_a_running_run_flags_it_for_its_owner(store: MemoryStore) -> None:
    register(store, "r1")
    store.claim("r1", owner="w:1", lease_ttl_s=30, max_attempts=5, now=time.time())
    commands(store, [])["revoke"](None, ["r1"])
    record = store.get("r1")
    assert record is not None and record.cancel_requested
    assert record.status is RunStatus.RUNNING  # the owner stops at its next step boundary


def test_celery_control_terminate_cancels_the_run_too(store: MemoryStore) -> None:
    """Celery's `terminate` command calls its revoke function directly, not our handler."""
    register(store, "r1")
    calls: list[Any] = []
    reply = commands(store, calls)["terminate"](None, "KILL", ["r1"])
    assert status(store, "r1") is RunStatus.CANCELLED
    assert calls == [(["r1"], True)]
    assert reply["ok"].endswith("runs cancelled: r1")


def test_a_task_id_that_names_no_run_is_left_to_celery(store: MemoryStore) -> None:
    calls: list[Any] = []
    reply = commands(store, calls)["revoke"](None, ["not-a-run"])
    assert calls == [(["not-a-run"], False)]
    assert reply == {"ok": "tasks ['not-a-run'] flagged as revoked"}


def test_an_unreachable_store_is_said_in_the_reply_and_celerys_revoke_still_runs() -> None:
    class Down(MemoryStore):
        def request_cancel(self, run_id: str, *, now: float) -> Any:
            raise StoreError("connection refused")

    calls: list[Any] = []
    reply = commands(Down(), calls)["revoke"](None, "r1")
    assert calls and "store unreachable for: r1" in reply["ok"]


def test_a_message_dropped_as_revoked_cancels_the_run_it_names(store: MemoryStore) -> None:
    register(store, "r1")
    request = SimpleNamespace(id="some-foreign-task-id", args=["r1", "{}"], kwargs={})
    hook(store).on_task_revoked(sender=OUR_TASK, request=request, expired=True)
    assert status(store, "r1") is RunStatus.CANCELLED


def test_revoked_signals_of_other_tasks_and_of_cancelled_runs_are_ignored(
    store: MemoryStore,
) -> None:
    register(store, "r1")
    request = SimpleNamespace(id="r1", args=["r1", "{}"], kwargs={})
    hook(store).on_task_revoked(sender=SimpleNamespace(name="other.task"), request=request)
    setattr(request, CANCELLED_MARK, True)
    hook(store).on_task_revoked(sender=OUR_TASK, request=request)
    assert status(store, "r1") is RunStatus.QUEUED
