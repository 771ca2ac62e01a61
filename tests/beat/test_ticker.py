"""The tick against real Redis: reserve-then-enqueue, one run per fire, failures contained."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import redis
from beat_world import FailingEnqueuer, World
from redis.backoff import NoBackoff
from redis.retry import Retry

from beat.ticker import Ticker
from executus_worker.core.models import RunStatus
from executus_worker.schedules.timing import format_fire, jitter_offset_s

pytestmark = pytest.mark.redis

NOON = datetime(2026, 5, 1, 12, tzinfo=UTC)


def at(world: World, when: datetime, *tickers: Ticker) -> None:
    world.clock.set(when)
    for ticker in tickers:
        ticker.tick()


def test_first_sight_reserves_the_next_fire_without_firing(world: World) -> None:
    world.add("hourly", "0 * * * *")
    ticker = world.ticker()
    wait_s = ticker.tick()
    assert world.store.state("hourly").next_fire == "2026-05-01T12:00:00Z"
    assert world.run_ids() == []
    assert 0 < wait_s <= 30


def test_a_due_fire_enqueues_one_run_with_the_deterministic_id(world: World) -> None:
    world.add("hourly", "0 * * * *", run={"agent": "demo.counter", "metadata": {"team": "a"}})
    ticker = world.ticker()
    ticker.tick()
    at(world, NOON + timedelta(seconds=1), ticker, ticker)
    assert world.run_ids() == ["sched:hourly:2026-05-01T12:00:00Z"]
    assert world.publisher.sent == ["sched:hourly:2026-05-01T12:00:00Z"]
    record = world.runs.get("sched:hourly:2026-05-01T12:00:00Z")
    assert record is not None and record.status is RunStatus.QUEUED
    assert record.request.metadata == {
        "team": "a",
        "schedule": "hourly",
        "fire_at": "2026-05-01T12:00:00Z",
    }
    state = world.store.state("hourly")
    assert state.next_fire == "2026-05-01T13:00:00Z"
    assert (state.last_fire, state.last_outcome, state.fires) == (
        "2026-05-01T12:00:00Z",
        "enqueued",
        1,
    )


def test_a_second_beat_and_a_restarted_beat_create_no_second_run(world: World) -> None:
    world.add("hourly", "0 * * * *")
    first, second = world.ticker(), world.ticker()
    at(world, NOON - timedelta(seconds=5), first)
    at(world, NOON + timedelta(seconds=1), first, second)
    restarted = world.ticker()
    at(world, NOON + timedelta(seconds=2), restarted, second, first)
    assert world.run_ids() == ["sched:hourly:2026-05-01T12:00:00Z"]
    assert len(world.publisher.sent) == 1
    assert first.stats.fired + second.stats.fired + restarted.stats.fired == 1


def test_a_reservation_made_twice_still_creates_one_run(world: World) -> None:
    """Even if the CAS were bypassed, the idempotent enqueue keeps one run per fire."""
    spec = world.add("hourly", "0 * * * *")
    run_id, request = spec.fire_request(NOON)
    assert world.enqueuer.enqueue(request, run_id) is True
    assert world.enqueuer.enqueue(request, run_id) is False
    assert world.publisher.sent == [run_id]


def test_an_enqueue_that_raises_is_retried_with_backoff_and_never_storms(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add("broken", "*/5 * * * *", overlap="allow")
    world.add("fine", "*/5 * * * *", overlap="allow")
    enqueuer = FailingEnqueuer(world.enqueuer, {"broken"}, lambda: ConnectionError("broker down"))
    ticker = world.ticker(enqueuer)
    ticker.tick()
    for _ in range(5):  # many ticks while the fire is due: one attempt, then backoff
        at(world, NOON + timedelta(seconds=3), ticker)
    assert enqueuer.calls == {"broken": 1, "fine": 1}
    assert world.run_ids() == ["sched:fine:2026-05-01T12:00:00Z"]
    state = world.store.state("broken")
    assert state.last_outcome == "enqueue_failed"
    assert state.enqueue_failures == 1
    assert "broker down" in state.last_error
    assert state.next_fire == "2026-05-01T12:05:00Z"
    assert ticker.stats.enqueue_failures == 1
    assert "enqueue of sched:broken:2026-05-01T12:00:00Z failed" in caplog.text

    at(world, NOON + timedelta(seconds=4), ticker)  # 1 s backoff passed: attempt 2
    assert enqueuer.calls["broken"] == 2
    at(world, NOON + timedelta(seconds=5), ticker)  # now 2 s backoff
    assert enqueuer.calls["broken"] == 2
    enqueuer.failing.clear()  # the broker is back: the retry goes through
    at(world, NOON + timedelta(seconds=6, milliseconds=100), ticker)
    assert enqueuer.calls["broken"] == 3
    assert world.run_ids("sched:broken") == ["sched:broken:2026-05-01T12:00:00Z"]
    state = world.store.state("broken")
    assert (state.last_outcome, state.attempts, state.enqueue_failures) == ("enqueued", 3, 2)
    at(world, NOON + timedelta(minutes=5, seconds=1), ticker)
    assert world.run_ids("sched:broken") == [
        "sched:broken:2026-05-01T12:00:00Z",
        "sched:broken:2026-05-01T12:05:00Z",
    ]


def test_an_exception_in_one_job_never_stops_the_others(world: World) -> None:
    world.add("a", "*/5 * * * *")
    world.add("b", "*/5 * * * *")
    world.add("c", "*/5 * * * *")
    enqueuer = FailingEnqueuer(world.enqueuer, {"b"}, lambda: RuntimeError("bug in b"))
    ticker = world.ticker(enqueuer)
    ticker.tick()
    # And a job whose state row is garbage (a tick-time exception, not an enqueue one).
    world.client.hset(world.store.keys.state("c"), "next_fire", "not a time")
    at(world, NOON + timedelta(seconds=1), ticker)
    assert world.run_ids() == ["sched:a:2026-05-01T12:00:00Z"]
    assert ticker.stats.job_errors == 1
    assert ticker.stats.enqueue_failures == 1


def test_invalid_jobs_are_recorded_logged_once_and_never_fire(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.add("good", "* * * * *", overlap="allow")
    # Written behind the model's back, as an older version or another tool might.
    bad = '{"name": "bad", "cron": "61 * * * *", "run": {"agent": "demo.counter"}}'
    world.client.hset(world.store.keys.jobs, "bad", bad)
    tz = '{"name": "tz", "cron": "* * * * *", "timezone": "Mars/Base", "run": {"agent": "x"}}'
    world.client.hset(world.store.keys.jobs, "tz", tz)
    beats = [world.ticker(), world.ticker()]
    with caplog.at_level(logging.ERROR, logger="beat.ticker"):
        for minute in range(4):
            at(world, NOON + timedelta(minutes=minute, seconds=1), *beats)
    assert world.run_ids("sched:bad") == world.run_ids("sched:tz") == []
    assert len(world.run_ids("sched:good")) == 3
    assert "out of range" in world.store.state("bad").invalid
    assert "unknown timezone" in world.store.state("tz").invalid
    logged = [r.getMessage() for r in caplog.records if "is invalid" in r.getMessage()]
    assert len(logged) == 2, logged  # once per job, across both beats and all ticks


def test_overlap_skip_waits_for_the_previous_run_and_allow_does_not(world: World) -> None:
    world.add("skip", "*/5 * * * *", overlap="skip")
    world.add("allow", "*/5 * * * *", overlap="allow")
    ticker = world.ticker()
    ticker.tick()
    at(world, NOON + timedelta(seconds=1), ticker)  # both fire; nobody runs them
    at(world, NOON + timedelta(minutes=5, seconds=1), ticker)
    assert world.run_ids("sched:skip") == ["sched:skip:2026-05-01T12:00:00Z"]
    assert len(world.run_ids("sched:allow")) == 2
    state = world.store.state("skip")
    assert state.last_outcome == "skipped_overlap"
    assert "still queued" in state.last_error

    # The previous run finishes: the next fire goes ahead.
    run_id = "sched:skip:2026-05-01T12:00:00Z"
    claim = world.runs.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=world.clock())
    world.runs.finish(
        run_id, fence=claim.fence, status=RunStatus.COMPLETED, output="done", error=None,
        base_len=0, new_messages=[], now=world.clock(), result_ttl_s=3600,
    )  # fmt: skip
    at(world, NOON + timedelta(minutes=10, seconds=1), ticker)
    assert world.run_ids("sched:skip") == [run_id, "sched:skip:2026-05-01T12:10:00Z"]


def test_after_an_outage_one_catch_up_fire_runs(world: World) -> None:
    world.add("hourly", "0 * * * *", catchup_window_s=1800)
    ticker = world.ticker()
    ticker.tick()
    # Beat is down from before noon until 15:10: four fires were missed.
    at(world, NOON + timedelta(hours=3, minutes=10), world.ticker())
    assert world.run_ids() == ["sched:hourly:2026-05-01T15:00:00Z"]
    state = world.store.state("hourly")
    assert state.missed_from == "2026-05-01T12:00:00Z"
    assert state.next_fire == "2026-05-01T16:00:00Z"


def test_missed_fires_beyond_the_window_are_skipped(world: World) -> None:
    world.add("hourly", "0 * * * *", catchup_window_s=300)
    world.ticker().tick()
    at(world, NOON + timedelta(hours=3, minutes=10), world.ticker())
    assert world.run_ids() == []
    assert world.store.state("hourly").next_fire == "2026-05-01T16:00:00Z"


def test_paused_job_does_not_fire_and_resumes_without_a_backlog(world: World) -> None:
    world.add("m", "* * * * *", overlap="allow")
    ticker = world.ticker()
    ticker.tick()
    world.store.pause("m")
    for minute in range(5):
        at(world, NOON + timedelta(minutes=minute, seconds=1), ticker)
    assert world.run_ids() == []
    world.store.resume("m")
    at(world, NOON + timedelta(minutes=5, seconds=2), ticker)
    at(world, NOON + timedelta(minutes=6, seconds=1), ticker)
    # 12:00-12:04 never run; 12:05 was the reservation when the pause ended.
    assert world.run_ids() == ["sched:m:2026-05-01T12:05:00Z", "sched:m:2026-05-01T12:06:00Z"]


def test_disabled_job_never_fires(world: World) -> None:
    world.add("off", "* * * * *", enabled=False)
    ticker = world.ticker()
    for minute in range(3):
        at(world, NOON + timedelta(minutes=minute, seconds=1), ticker)
    assert world.run_ids() == []


def test_changed_cron_applies_without_restart_and_restarts_the_schedule(world: World) -> None:
    world.add("j", "0 * * * *")
    ticker = world.ticker()
    ticker.tick()
    assert world.store.state("j").next_fire == "2026-05-01T12:00:00Z"
    world.add("j", "*/10 * * * *", timezone="Europe/Berlin")
    at(world, NOON - timedelta(seconds=10), ticker)
    assert world.store.state("j").next_fire == "2026-05-01T12:00:00Z"
    at(world, NOON + timedelta(minutes=10, seconds=1), ticker)
    # 12:00 was reserved under the new key and is 10 minutes late: inside the default window,
    # so it runs once as the catch-up; 12:10 is the newest due fire and wins.
    assert world.run_ids() == ["sched:j:2026-05-01T12:10:00Z"]


def test_removed_job_stops_firing(world: World) -> None:
    world.add("gone", "* * * * *")
    ticker = world.ticker()
    at(world, NOON + timedelta(seconds=1), ticker)
    world.store.remove_job("gone")
    at(world, NOON + timedelta(minutes=1, seconds=1), ticker)
    assert world.run_ids() == []
    assert world.store.state("gone").next_fire == ""


def test_tick_returns_time_until_the_next_due_fire(world: World) -> None:
    world.add("h", "0 * * * *")
    ticker = world.ticker()
    world.clock.set(NOON - timedelta(seconds=2))
    assert ticker.tick() == pytest.approx(2.0)
    world.clock.set(NOON - timedelta(minutes=30))
    assert ticker.tick() == ticker.max_sleep_s


def test_redis_down_makes_the_tick_wait_not_raise(world: World) -> None:
    dead = redis.Redis(
        host="127.0.0.1", port=9, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    world.add("h", "* * * * *")
    ticker = world.ticker(client=dead)
    assert ticker.tick() == ticker.max_sleep_s


def test_daily_berlin_job_fires_once_per_day_across_fall_back(world: World) -> None:
    world.add("nightly", "30 2 * * *", timezone="Europe/Berlin", overlap="allow")
    ticker = world.ticker()
    at(world, datetime(2026, 10, 23, 12, tzinfo=UTC), ticker)
    step = timedelta(minutes=7)
    t = datetime(2026, 10, 23, 12, tzinfo=UTC)
    while t < datetime(2026, 10, 27, 12, tzinfo=UTC):
        t += step
        at(world, t, ticker)
    assert world.run_ids() == [
        "sched:nightly:2026-10-24T00:30:00Z",
        "sched:nightly:2026-10-25T00:30:00Z",
        "sched:nightly:2026-10-26T01:30:00Z",
        "sched:nightly:2026-10-27T01:30:00Z",
    ]


def test_daily_new_york_job_fires_once_at_the_next_valid_instant_in_spring(world: World) -> None:
    world.add("nightly", "30 2 * * *", timezone="America/New_York", overlap="allow")
    ticker = world.ticker()
    t = datetime(2026, 3, 7, 0, tzinfo=UTC)
    at(world, t, ticker)
    while t < datetime(2026, 3, 10, 0, tzinfo=UTC):
        t += timedelta(minutes=5)
        at(world, t, ticker)
    assert world.run_ids() == [
        "sched:nightly:2026-03-07T07:30:00Z",
        "sched:nightly:2026-03-08T07:00:00Z",  # 03:00 EDT: 02:30 did not exist
        "sched:nightly:2026-03-09T06:30:00Z",
    ]


def test_jittered_fire_waits_for_its_offset(world: World) -> None:
    world.add("j", "0 * * * *", jitter_s=120)
    ticker = world.ticker()
    ticker.tick()
    delay = jitter_offset_s("j", NOON, 120)
    at(world, NOON + timedelta(seconds=delay - 0.5), ticker)
    assert world.run_ids() == []
    at(world, NOON + timedelta(seconds=delay + 0.5), ticker)
    assert world.run_ids() == [f"sched:j:{format_fire(NOON)}"]
