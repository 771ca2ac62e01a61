"""The per-tick decision with a fake clock: due or not, catch-up window, jitter, run ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from executus_worker.core.models import RunRequest
from executus_worker.schedules.cron import Schedule
from executus_worker.schedules.timing import (
    FireTiming,
    fire_run_id,
    format_fire,
    jitter_offset_s,
    parse_fire,
    plan_fire,
    retry_delay_s,
)

HOURLY = Schedule.parse("0 * * * *")
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)  # an hourly fire


def timing(window_s: float = 600, jitter_s: float = 0) -> FireTiming:
    return FireTiming("job", catchup_window_s=window_s, jitter_s=jitter_s)


def test_not_due_before_the_reserved_fire() -> None:
    assert plan_fire(HOURLY, timing(), reserved=T0, now=T0 - timedelta(seconds=1)) is None


def test_on_time_fire_runs_and_reserves_the_next_one() -> None:
    plan = plan_fire(HOURLY, timing(), reserved=T0, now=T0 + timedelta(seconds=2))
    assert plan is not None
    assert plan.fire == T0
    assert plan.next_fire == T0 + timedelta(hours=1)
    assert plan.missed_from is None


def test_a_fire_late_within_the_window_still_runs() -> None:
    plan = plan_fire(HOURLY, timing(window_s=600), reserved=T0, now=T0 + timedelta(seconds=599))
    assert plan is not None and plan.fire == T0


def test_a_fire_later_than_the_window_is_skipped_without_running() -> None:
    now = T0 + timedelta(seconds=601)
    plan = plan_fire(HOURLY, timing(window_s=600), reserved=T0, now=now)
    assert plan is not None
    assert plan.fire is None
    assert plan.missed_from == T0
    assert plan.next_fire == T0 + timedelta(hours=1)


def test_after_an_outage_only_the_newest_missed_fire_runs() -> None:
    # Down from 12:00 to 15:05: 12, 13, 14 and 15 were missed; only 15:00 (5 min late) runs.
    now = T0 + timedelta(hours=3, minutes=5)
    plan = plan_fire(HOURLY, timing(window_s=600), reserved=T0, now=now)
    assert plan is not None
    assert plan.fire == T0 + timedelta(hours=3)
    assert plan.missed_from == T0
    assert plan.next_fire == T0 + timedelta(hours=4)


def test_after_an_outage_longer_than_the_window_nothing_runs() -> None:
    now = T0 + timedelta(hours=3, minutes=30)
    plan = plan_fire(HOURLY, timing(window_s=600), reserved=T0, now=now)
    assert plan is not None
    assert plan.fire is None
    assert plan.next_fire == T0 + timedelta(hours=4)


def test_zero_window_runs_only_a_fire_that_is_exactly_due() -> None:
    assert plan_fire(HOURLY, timing(window_s=0), reserved=T0, now=T0).fire == T0  # type: ignore[union-attr]
    late = plan_fire(HOURLY, timing(window_s=0), reserved=T0, now=T0 + timedelta(seconds=1))
    assert late is not None and late.fire is None


def test_a_month_long_outage_of_a_per_minute_job_is_planned_without_walking_it() -> None:
    every_minute = Schedule.parse("* * * * *")
    now = T0 + timedelta(days=30, seconds=30)
    plan = plan_fire(every_minute, timing(window_s=60), reserved=T0, now=now)
    assert plan is not None
    assert plan.fire == T0 + timedelta(days=30)
    assert plan.next_fire == T0 + timedelta(days=30, minutes=1)


def test_jitter_is_deterministic_bounded_and_spread() -> None:
    offsets = [jitter_offset_s("job", T0 + timedelta(hours=h), 60) for h in range(200)]
    assert offsets == [jitter_offset_s("job", T0 + timedelta(hours=h), 60) for h in range(200)]
    assert all(0 <= o < 60 for o in offsets)
    assert len(set(offsets)) > 150
    assert jitter_offset_s("other", T0, 60) != jitter_offset_s("job", T0, 60)
    assert jitter_offset_s("job", T0, 0) == 0


def test_jitter_delays_the_fire_but_not_its_run_id() -> None:
    t = timing(jitter_s=60)
    delay = jitter_offset_s("job", T0, 60)
    assert delay > 0
    before = T0 + timedelta(seconds=delay) - timedelta(milliseconds=1)
    assert plan_fire(HOURLY, t, reserved=T0, now=before) is None
    plan = plan_fire(HOURLY, t, reserved=T0, now=T0 + timedelta(seconds=delay))
    assert plan is not None and plan.fire == T0
    assert fire_run_id("job", plan.fire) == "sched:job:2026-05-01T12:00:00Z"


def test_catch_up_lateness_is_measured_from_the_jittered_time() -> None:
    t = timing(window_s=10, jitter_s=60)
    due = T0 + timedelta(seconds=jitter_offset_s("job", T0, 60))
    plan = plan_fire(HOURLY, t, reserved=T0, now=due + timedelta(seconds=10))
    assert plan is not None and plan.fire == T0


def test_fire_run_id_is_a_valid_run_id_and_round_trips() -> None:
    run_id = fire_run_id("nightly-digest", datetime(2026, 11, 21, 2, tzinfo=UTC))
    assert run_id == "sched:nightly-digest:2026-11-21T02:00:00Z"
    RunRequest(agent="demo.counter", run_id=run_id)  # satisfies the RunId pattern
    assert parse_fire(run_id.split(":", 2)[2]) == datetime(2026, 11, 21, 2, tzinfo=UTC)


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_fire_time_text_is_always_utc(tz: str) -> None:
    local = datetime(2026, 7, 1, 3, 0, tzinfo=ZoneInfo(tz))
    assert format_fire(local).endswith("Z")
    assert parse_fire(format_fire(local)) == local


def test_retry_delays_double_from_the_base_up_to_the_cap() -> None:
    delays = [retry_delay_s(n, base_s=1, max_s=60) for n in range(1, 9)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay_s(10_000, base_s=1, max_s=60) == 60  # no float overflow


def test_a_fire_gives_up_when_its_catch_up_window_ends_after_its_jitter() -> None:
    jittered = timing(window_s=600, jitter_s=120)
    assert jittered.gives_up_at(T0) == jittered.due_at(T0) + timedelta(seconds=600)
