"""The Redis schedule store and the admin facade: CAS, dynamic jobs, pauses, listing."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRequest
from executus_worker.errors import ScheduleError
from executus_worker.schedules.admin import ScheduleAdmin
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.store import JobState, ScheduleStore

pytestmark = pytest.mark.redis

FILE_JOB = '[jobs.from-file]\ncron = "0 3 * * *"\nrun = { agent = "demo.counter" }\n'


def spec(name: str = "j", **fields: Any) -> JobSpec:
    base: dict[str, Any] = {"name": name, "cron": "*/5 * * * *", "run": {"agent": "demo.counter"}}
    return JobSpec.model_validate(base | fields)


@pytest.fixture
def store(redis_client: redis.Redis) -> ScheduleStore:
    return ScheduleStore(redis_client, key_prefix="st")


@pytest.fixture
def admin(store: ScheduleStore, redis_client: redis.Redis, tmp_path: Path) -> ScheduleAdmin:
    path = tmp_path / "s.toml"
    path.write_text(FILE_JOB)
    clock = datetime(2026, 5, 1, 12, 1, tzinfo=UTC).timestamp
    return ScheduleAdmin(
        store, schedule_file=path, runs=RedisStore(redis_client, key_prefix="st"), clock=clock
    )


def test_compare_and_set_writes_only_when_every_expectation_holds(store: ScheduleStore) -> None:
    assert store.compare_and_set("j", expect={"next_fire": ""}, values={"next_fire": "A"})
    assert not store.compare_and_set("j", expect={"next_fire": ""}, values={"next_fire": "B"})
    assert store.compare_and_set(
        "j", expect={"next_fire": "A"}, values={"next_fire": "B"}, increments={"fires": 1}
    )
    assert not store.compare_and_set(
        "j", expect={"next_fire": "B", "schedule_key": "x"}, values={"next_fire": "C"}
    )
    state = store.state("j")
    assert (state.next_fire, state.fires) == ("B", 1)


def test_a_state_row_says_whether_its_last_fire_is_pending_and_in_flight(
    store: ScheduleStore,
) -> None:
    values = {
        "last_fire": "2026-05-01T12:00:00Z",
        "last_run_id": "sched:j:2026-05-01T12:00:00Z",
        "last_outcome": "reserved",
        "attempts": 1,
        "retry_at": 1000.5,
    }
    assert store.compare_and_set("j", expect={}, values=values)
    state = store.state("j")
    assert (state.attempts, state.retry_at, state.pending) == (1, 1000.5, True)
    assert state.in_flight(1000.0) and not state.in_flight(1000.5)
    # The guard pins this attempt: it holds now and fails once another attempt is claimed.
    assert store.compare_and_set("j", expect=state.attempt_guard(), values={"attempts": 2})
    assert not store.compare_and_set("j", expect=state.attempt_guard(), values={"attempts": 3})
    settled = JobState(last_fire="x", last_run_id="y", last_outcome="enqueued")
    assert not settled.pending
    assert not JobState(last_outcome="enqueue_failed").pending  # nothing named to retry


def test_runtime_jobs_add_replace_remove(store: ScheduleStore) -> None:
    assert store.add_job(spec())
    assert not store.add_job(spec(cron="0 * * * *"))  # exists: unchanged
    assert store.get_job("j") == spec()
    assert store.add_job(spec(cron="0 * * * *"), replace=True)
    assert store.get_job("j") == spec(cron="0 * * * *")
    store.compare_and_set("j", expect={}, values={"next_fire": "X"})
    store.pause("j")
    assert store.remove_job("j")
    assert store.get_job("j") is None
    assert store.state("j").next_fire == ""
    assert store.paused() == set()
    assert not store.remove_job("j")


def test_a_stored_job_that_no_longer_validates_is_a_problem(
    store: ScheduleStore, redis_client: redis.Redis
) -> None:
    store.add_job(spec("ok"))
    redis_client.hset(store.keys.jobs, "broken", "{not json")
    jobs, problems = store.load_jobs()
    assert [j.name for j in jobs] == ["ok"]
    assert [p.name for p in problems] == ["broken"]
    assert "redis job broken" in problems[0].error


def test_admin_lists_file_and_redis_jobs_with_their_state(
    admin: ScheduleAdmin, store: ScheduleStore, redis_client: redis.Redis
) -> None:
    admin.add(spec("dyn"))
    runs = RedisStore(redis_client, key_prefix="st")
    run_id = "sched:dyn:2026-05-01T12:00:00Z"
    runs.register(RunRequest(agent="demo.counter"), run_id=run_id, queue="q", now=time.time())
    store.compare_and_set(
        "dyn",
        expect={},
        values={
            "schedule_key": "*/5 * * * *|UTC",
            "next_fire": "2026-05-01T12:05:00Z",
            "last_fire": "2026-05-01T12:00:00Z",
            "last_run_id": run_id,
            "last_outcome": "enqueued",
        },
    )
    views, file_error = admin.list()
    assert file_error is None
    by_name = {v.name: v for v in views}
    dyn, from_file = by_name["dyn"], by_name["from-file"]
    assert (dyn.source, dyn.state, dyn.next_fire, dyn.next_fire_pending) == (
        "redis",
        "active",
        "2026-05-01T12:05:00Z",
        False,
    )
    assert (dyn.last_fire, dyn.last_run_id, dyn.last_run_status) == (
        "2026-05-01T12:00:00Z",
        run_id,
        "queued",
    )
    # No beat has seen the file job yet: its next fire is computed and flagged.
    assert (from_file.source, from_file.next_fire, from_file.next_fire_pending) == (
        "file",
        "2026-05-02T03:00:00Z",
        True,
    )


def test_admin_shows_invalid_paused_and_shadowed_jobs(
    admin: ScheduleAdmin, store: ScheduleStore, redis_client: redis.Redis
) -> None:
    redis_client.hset(store.keys.jobs, "bad", '{"name": "bad", "cron": "nope", "run": {}}')
    store.add_job(spec("from-file"))  # same name as the file job, behind the admin's back
    admin.add(spec("p"))
    admin.pause("p")
    views, _ = admin.list()
    rows = {(v.name, v.source): v for v in views}
    assert rows[("bad", "redis")].state == "invalid"
    assert "redis job bad.cron" in rows[("bad", "redis")].error
    assert rows[("p", "redis")].state == "paused"
    assert rows[("p", "redis")].next_fire == ""
    assert rows[("from-file", "redis")].state == "shadowed"
    assert rows[("from-file", "file")].state == "active"


def test_admin_refuses_to_edit_file_jobs_and_unknown_names(admin: ScheduleAdmin) -> None:
    with pytest.raises(ScheduleError, match="defined in the schedule file"):
        admin.add(spec("from-file"))
    with pytest.raises(ScheduleError, match="defined in the schedule file"):
        admin.remove("from-file")
    with pytest.raises(ScheduleError, match="no job named"):
        admin.remove("nope")
    with pytest.raises(ScheduleError, match="no job named"):
        admin.pause("nope")
    admin.add(spec("dup"))
    with pytest.raises(ScheduleError, match="exists"):
        admin.add(spec("dup"))
    admin.add(spec("dup", cron="@hourly"), replace=True)


def test_file_jobs_can_be_paused_and_resumed(admin: ScheduleAdmin) -> None:
    assert admin.pause("from-file") is True
    assert admin.pause("from-file") is False
    assert {v.name: v.state for v in admin.list()[0]}["from-file"] == "paused"
    assert admin.resume("from-file") is True
    assert admin.resume("from-file") is False
