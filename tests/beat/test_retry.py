"""Reserved fires that were not enqueued: retried by any beat, once each, within the window.

Real Redis throughout; the failures are injected into the real enqueue path (the run store's
registration, the broker publish) or stand in for a beat process dying mid-tick.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from beat_world import PREFIX, FailingEnqueuer, World

from beat.retention import StateRetention
from beat.ticker import RetryPolicy, Ticker
from executus_worker.core.models import RunRequest, RunStatus
from executus_worker.schedules.admin import ScheduleAdmin
from executus_worker.schedules.store import STATE_TTL_S
from executus_worker.schedules.timing import fire_run_id

pytestmark = pytest.mark.redis

NOON = datetime(2026, 5, 1, 12, tzinfo=UTC)


class SimulatedKill(BaseException):
    """What a tick sees of SIGKILL: nothing after this point runs (not even except Exception)."""


def at(world: World, when: datetime, *tickers: Ticker) -> None:
    world.clock.set(when)
    for ticker in tickers:
        ticker.tick()


def sweep_seconds(world: World, start: datetime, seconds: float, *tickers: Ticker) -> None:
    """Tick every 0.25 s of fake time, as a beat polling often would."""
    for step in range(int(seconds * 4) + 1):
        at(world, start + timedelta(seconds=step / 4), *tickers)


def test_a_store_that_fails_n_times_then_succeeds_gives_exactly_one_run_per_fire(
    world: World,
) -> None:
    world.add("m", "* * * * *", overlap="allow")
    enqueuer, store, _ = world.flaky_enqueuer(register_failures=3)
    beats = [world.ticker(enqueuer), world.ticker(enqueuer)]
    at(world, NOON - timedelta(seconds=5), *beats)
    # Three fires; Redis fails the first three registrations (all of the first fire's first
    # three attempts: 1 s, 2 s, 4 s of backoff), then recovers.
    for minute in range(3):
        sweep_seconds(world, NOON + timedelta(minutes=minute), 20, *beats)
    expected = [fire_run_id("m", NOON + timedelta(minutes=k)) for k in range(3)]
    assert world.run_ids() == expected
    assert world.publisher.sent == expected  # one message each, none twice
    assert store.calls == 3 + 3  # three failures, then one registration per fire
    first = world.runs.get(expected[0])
    assert first is not None and first.status is RunStatus.QUEUED
    state = world.store.state("m")
    assert (state.fires, state.enqueue_failures, state.missed_fires) == (3, 3, 0)
    assert sum(b.stats.retries for b in beats) == 3
    assert sum(b.stats.fired for b in beats) == 3


def test_retries_back_off_exponentially(world: World) -> None:
    world.add("m", "0 * * * *")
    enqueuer = FailingEnqueuer(world.enqueuer, {"m"}, lambda: OSError("connection refused"))
    ticker = world.ticker(enqueuer)
    ticker.tick()
    attempts_at: list[float] = []
    for tenth in range(0, 700):  # 70 s in steps of 0.1 s
        before = enqueuer.calls.get("m", 0)
        at(world, NOON + timedelta(seconds=tenth / 10), ticker)
        if enqueuer.calls.get("m", 0) > before:
            attempts_at.append(tenth / 10)
    # Attempt 1 at the fire, then after 1, 2, 4, 8, 16 and 32 s (each within 0.1 s).
    assert attempts_at == pytest.approx([0, 1, 3, 7, 15, 31, 63], abs=0.11)


def test_a_publish_failure_after_registration_is_not_a_lost_fire(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add("m", "*/5 * * * *", overlap="allow")
    enqueuer, store, publisher = world.flaky_enqueuer(publish_failures=1)
    ticker = world.ticker(enqueuer)
    ticker.tick()
    with caplog.at_level(logging.INFO, logger="beat.ticker"):
        sweep_seconds(world, NOON, 120, ticker)
    run_id = "sched:m:2026-05-01T12:00:00Z"
    # Registered once and left queued for the recovery sweep; beat neither retries nor
    # reports a lost fire.
    assert world.run_ids() == [run_id]
    record = world.runs.get(run_id)
    assert record is not None and record.status is RunStatus.QUEUED
    assert (store.calls, publisher.calls) == (1, 1)
    state = world.store.state("m")
    assert (state.last_outcome, state.missed_fires, state.enqueue_failures) == (
        "publish_failed",
        0,
        0,
    )
    assert "injected: publish failure 1" in state.last_error
    messages = [r.getMessage() for r in caplog.records]
    [line] = [m for m in messages if run_id in m and "published" in m]
    assert "registered but its message was not published" in line
    assert "not a lost fire" in line
    assert not any("missed" in m or "lost" in m.replace("not a lost", "") for m in messages)
    assert ticker.stats.publish_failures == 1


def test_a_fire_still_failing_when_its_window_passes_is_reported_missed_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add("m", "0 * * * *", catchup_window_s=60)
    enqueuer = FailingEnqueuer(world.enqueuer, {"m"}, lambda: ConnectionError("down"))
    beats = [world.ticker(enqueuer), world.ticker(enqueuer)]
    at(world, NOON - timedelta(seconds=1), *beats)
    with caplog.at_level(logging.WARNING, logger="beat.ticker"):
        sweep_seconds(world, NOON, 90, *beats)
    assert world.run_ids() == []
    assert enqueuer.calls["m"] == 6  # at 0, 1, 3, 7, 15, 31 s; the 63 s retry is too late
    state = world.store.state("m")
    assert (state.last_outcome, state.missed_fires) == ("missed", 1)
    assert "catch-up window (60s) passed" in state.last_error
    missed = [r.getMessage() for r in caplog.records if "is missed" in r.getMessage()]
    assert len(missed) == 1, missed
    assert "sched:m:2026-05-01T12:00:00Z" in missed[0]
    assert sum(b.stats.abandoned for b in beats) == 1
    [view], _ = ScheduleAdmin(world.store, runs=world.runs).list()
    assert (view.last_outcome, view.missed_fires, view.enqueue_failures) == ("missed", 1, 6)
    assert "never enqueued (6 attempt(s))" in view.error

    enqueuer.failing.clear()  # the next fire is unaffected
    at(world, NOON + timedelta(hours=1, seconds=1), *beats)
    assert world.run_ids() == ["sched:m:2026-05-01T13:00:00Z"]


def test_a_newer_due_fire_replaces_a_fire_still_backing_off(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """As after an outage, only the newest due fire runs; the replaced one is reported."""
    world.add("m", "* * * * *", overlap="allow")
    enqueuer = FailingEnqueuer(world.enqueuer, {"m"}, lambda: ConnectionError("down"))
    ticker = world.ticker(enqueuer)
    at(world, NOON - timedelta(seconds=1), ticker)
    sweep_seconds(world, NOON, 59, ticker)  # attempts at 0, 1, 3, 7, 15, 31 s; next at 63 s
    enqueuer.failing.clear()
    with caplog.at_level(logging.WARNING, logger="beat.ticker"):
        at(world, NOON + timedelta(minutes=1, seconds=1), ticker)
    assert world.run_ids() == ["sched:m:2026-05-01T12:01:00Z"]
    state = world.store.state("m")
    assert (state.last_outcome, state.attempts, state.missed_fires) == ("enqueued", 1, 1)
    [line] = [r.getMessage() for r in caplog.records if "never enqueued" in r.getMessage()]
    assert "sched:m:2026-05-01T12:00:00Z" in line and "sched:m:2026-05-01T12:01:00Z" in line


def test_no_newer_fire_is_reserved_while_an_attempt_is_in_flight(world: World) -> None:
    """A dead beat's attempt blocks its job until its lease passes; then the old fire is
    retried first and the newer fire follows, each exactly once."""
    world.add("m", "* * * * *", overlap="allow")
    retry = RetryPolicy(enqueue_timeout_s=90)  # longer than the job's interval

    class KilledMidTick:
        def enqueue(self, request: RunRequest, run_id: str) -> bool:
            raise SimulatedKill

    at(world, NOON - timedelta(seconds=1), world.ticker())
    world.clock.set(NOON + timedelta(seconds=1))
    with pytest.raises(SimulatedKill):
        world.ticker(KilledMidTick(), retry=retry).tick()
    survivor = world.ticker(retry=retry)
    at(world, NOON + timedelta(minutes=1, seconds=1), survivor)
    assert world.run_ids() == []  # 12:01 waits: 12:00's attempt may still report back
    assert world.store.state("m").next_fire == "2026-05-01T12:01:00Z"
    at(world, NOON + timedelta(seconds=92), survivor, survivor)
    assert world.run_ids() == ["sched:m:2026-05-01T12:00:00Z", "sched:m:2026-05-01T12:01:00Z"]
    assert world.publisher.sent == world.run_ids()


def test_a_takeover_of_a_fire_registered_by_a_dead_beat_sends_nothing_twice(
    world: World,
) -> None:
    world.add("m", "*/5 * * * *", overlap="allow")

    class RegistersThenDies:
        def enqueue(self, request: RunRequest, run_id: str) -> bool:
            world.runs.register(request, run_id=run_id, queue="executus", now=world.clock())
            raise SimulatedKill

    world.ticker().tick()
    world.clock.set(NOON + timedelta(seconds=1))
    with pytest.raises(SimulatedKill):
        world.ticker(RegistersThenDies()).tick()
    survivor = world.ticker()
    at(world, NOON + timedelta(seconds=40), survivor, survivor)
    assert world.run_ids() == ["sched:m:2026-05-01T12:00:00Z"]
    assert world.publisher.sent == []  # registered: the recovery sweep owns its message
    assert world.store.state("m").last_outcome == "duplicate"
    assert survivor.stats.duplicates == 1


def test_a_retry_after_the_job_changed_keeps_the_run_already_registered(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The fire's run id is fixed; a retry with the job's new template never trips the
    client's payload-conflict check into an error or a second run."""
    world.add("m", "*/5 * * * *", run={"agent": "demo.counter", "input": {"steps": 1}})

    class RegistersThenDies:
        def enqueue(self, request: RunRequest, run_id: str) -> bool:
            world.runs.register(request, run_id=run_id, queue="executus", now=world.clock())
            raise SimulatedKill

    world.ticker().tick()
    world.clock.set(NOON + timedelta(seconds=1))
    with pytest.raises(SimulatedKill):
        world.ticker(RegistersThenDies()).tick()
    world.add("m", "*/5 * * * *", run={"agent": "demo.counter", "input": {"steps": 2}})
    survivor = world.ticker()
    with caplog.at_level(logging.WARNING, logger="beat.ticker"):
        at(world, NOON + timedelta(seconds=40), survivor)
    record = world.runs.get("sched:m:2026-05-01T12:00:00Z")
    assert record is not None and record.request.input == {"steps": 1}
    assert world.store.state("m").last_outcome == "duplicate"
    assert survivor.stats.job_errors == 0
    assert "differs in: input.steps" in caplog.text


@pytest.mark.parametrize("outcome", ["reserved", "enqueue_failed"])
def test_a_fire_left_pending_by_an_older_beat_is_retried(world: World, outcome: str) -> None:
    """Rows written before attempts were counted (no attempts, no retry_at) are picked up."""
    world.add("m", "*/5 * * * *")
    world.store.compare_and_set(
        "m",
        expect={},
        values={
            "schedule_key": "*/5 * * * *|UTC",
            "next_fire": "2026-05-01T12:05:00Z",
            "last_fire": "2026-05-01T12:00:00Z",
            "last_run_id": "sched:m:2026-05-01T12:00:00Z",
            "last_outcome": outcome,
        },
    )
    at(world, NOON + timedelta(seconds=30), world.ticker())
    assert world.run_ids() == ["sched:m:2026-05-01T12:00:00Z"]
    state = world.store.state("m")
    assert (state.last_outcome, state.attempts) == ("enqueued", 1)


def test_same_payload_retries_never_conflict(world: World) -> None:
    """Every attempt of a fire builds the identical request (metadata included)."""
    spec = world.add("m", "0 * * * *", run={"agent": "demo.counter", "metadata": {"k": "v"}})
    run_id, request = spec.fire_request(NOON)
    again_id, again = spec.fire_request(NOON)
    assert (run_id, request) == (again_id, again)
    assert world.enqueuer.enqueue(request, run_id) is True
    assert world.enqueuer.enqueue(again, again_id) is False


def test_only_one_beat_makes_each_retry(world: World, redis_url: str) -> None:
    world.add("m", "*/5 * * * *", overlap="allow")
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    class SlowEnqueuer:
        def enqueue(self, request: RunRequest, run_id: str) -> bool:
            calls.append(run_id)
            if len(calls) == 1:
                raise ConnectionError("first attempt fails")
            entered.set()
            release.wait(10)
            return world.enqueuer.enqueue(request, run_id)

    conns = [redis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        first = world.ticker(SlowEnqueuer(), client=conns[0])
        second = world.ticker(SlowEnqueuer(), client=conns[1])
        first.tick()
        at(world, NOON + timedelta(seconds=1), first)  # attempt 1 fails; retry from 12:00:02
        world.clock.set(NOON + timedelta(seconds=3))
        thread = threading.Thread(target=first.tick)
        thread.start()
        assert entered.wait(10)
        second.tick()  # the retry is in flight in `first`: `second` must not start another
        second.tick()
        release.set()
        thread.join(10)
    finally:
        release.set()
        for conn in conns:
            conn.close()
    assert calls == ["sched:m:2026-05-01T12:00:00Z"] * 2
    assert world.run_ids() == ["sched:m:2026-05-01T12:00:00Z"]
    assert world.store.state("m").last_outcome == "enqueued"


def test_the_next_fire_is_reserved_before_the_enqueue_runs(world: World) -> None:
    world.add("m", "*/5 * * * *")
    seen: list[tuple[str, str]] = []

    class Observing:
        def enqueue(self, request: RunRequest, run_id: str) -> bool:
            state = world.store.state("m")
            seen.append((state.next_fire, state.last_outcome))
            return world.enqueuer.enqueue(request, run_id)

    ticker = world.ticker(Observing())
    ticker.tick()
    at(world, NOON + timedelta(seconds=1), ticker)
    assert seen == [("2026-05-01T12:05:00Z", "reserved")]


# -- state row retention -------------------------------------------------------------------


def test_state_rows_of_scheduled_jobs_get_an_expiry_that_beats_keep_pushing_out(
    world: World,
) -> None:
    world.add("m", "* * * * *")
    ticker = world.ticker()
    ticker.tick()
    key = world.store.keys.state("m")
    assert STATE_TTL_S - 5 < world.client.ttl(key) <= STATE_TTL_S
    world.client.expire(key, 100)
    at(world, NOON + timedelta(minutes=30), ticker)
    assert world.client.ttl(key) <= 100  # refreshed hourly, not every tick
    at(world, NOON + timedelta(hours=2), ticker)
    assert world.client.ttl(key) > STATE_TTL_S - 5


def test_the_state_row_of_a_job_removed_from_the_file_expires(world: World, tmp_path: Path) -> None:
    job = '[jobs.{}]\ncron = "* * * * *"\nrun = {{ agent = "demo.counter" }}\n'
    schedule = tmp_path / "schedule.toml"
    schedule.write_text(job.format("kept") + job.format("dropped"))
    world.schedule_file = schedule
    ticker = world.ticker(
        retention=lambda store: StateRetention(store, clock=world.clock, ttl_s=1, refresh_s=0)
    )
    ticker.tick()
    assert world.store.state("dropped").next_fire
    schedule.write_text(job.format("kept"))
    os.utime(schedule, (time.time() + 5, time.time() + 5))  # a new mtime even if fast
    dropped = world.store.keys.state("dropped")
    deadline = time.monotonic() + 10
    while world.client.exists(dropped) and time.monotonic() < deadline:
        ticker.tick()
        time.sleep(0.1)
    assert not world.client.exists(dropped)
    assert world.store.state("kept").next_fire  # kept alive by every tick


def test_rows_written_before_rows_expired_are_given_an_expiry(world: World) -> None:
    ghost = world.store.keys.state("ghost")  # a job removed long ago, by an older beat
    world.client.hset(ghost, mapping={"next_fire": "2025-01-01T00:00:00Z"})
    other_prefix = f"{PREFIX}x:sched:state:foreign"
    world.client.hset(other_prefix, "next_fire", "x")
    world.ticker().tick()
    assert 0 < world.client.ttl(ghost) <= STATE_TTL_S
    assert world.client.ttl(other_prefix) == -1  # another prefix is not ours to touch
