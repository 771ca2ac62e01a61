"""Fire times as pure functions: timezones, both DST transitions, aliases, invalid input."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from executus_worker.errors import ScheduleError
from executus_worker.schedules import cron
from executus_worker.schedules.cron import Schedule
from executus_worker.schedules.timing import format_fire


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def fires(expr: str, tz: str, after: datetime, count: int) -> list[str]:
    schedule = Schedule.parse(expr, tz)
    return [format_fire(t) for t in itertools.islice(schedule.fires_after(after), count)]


def local(expr: str, tz: str, after: datetime, count: int) -> list[str]:
    schedule = Schedule.parse(expr, tz)
    return [
        t.astimezone(schedule.zone).strftime("%m-%d %H:%M%z")
        for t in itertools.islice(schedule.fires_after(after), count)
    ]


def test_utc_daily_job_fires_at_the_given_time() -> None:
    assert fires("0 3 * * *", "UTC", utc(2026, 1, 1, 12), 2) == [
        "2026-01-02T03:00:00Z",
        "2026-01-03T03:00:00Z",
    ]


def test_next_fire_is_strictly_after_the_given_instant() -> None:
    schedule = Schedule.parse("0 3 * * *")
    assert schedule.next_after(utc(2026, 1, 2, 3)) == utc(2026, 1, 3, 3)
    assert schedule.next_after(utc(2026, 1, 2, 2, 59, 59)) == utc(2026, 1, 2, 3)


def test_local_time_is_read_in_the_jobs_timezone() -> None:
    # 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC in summer.
    assert fires("0 3 * * *", "Europe/Berlin", utc(2026, 1, 10), 1) == ["2026-01-10T02:00:00Z"]
    assert fires("0 3 * * *", "Europe/Berlin", utc(2026, 7, 10), 1) == ["2026-07-10T01:00:00Z"]
    assert fires("0 3 * * *", "America/New_York", utc(2026, 1, 10), 1) == ["2026-01-10T08:00:00Z"]


def test_input_may_be_in_any_timezone() -> None:
    schedule = Schedule.parse("0 3 * * *", "Europe/Berlin")
    after = utc(2026, 1, 10).astimezone(schedule.zone)
    assert format_fire(schedule.next_after(after)) == "2026-01-10T02:00:00Z"


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Schedule.parse("* * * * *").next_after(datetime(2026, 1, 1))


# -- DST: Europe/Berlin (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00) ---------------


def test_berlin_fixed_time_in_the_spring_gap_fires_once_at_the_next_valid_instant() -> None:
    assert local("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27, 12), 4) == [
        "03-28 02:30+0100",
        "03-29 03:00+0200",  # 02:30 does not exist that day
        "03-30 02:30+0200",
        "03-31 02:30+0200",
    ]


def test_berlin_fixed_time_in_the_repeated_hour_fires_once() -> None:
    # croniter alone fires 02:30+02:00 and 02:30+01:00 on the 25th.
    assert local("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23, 12), 4) == [
        "10-24 02:30+0200",
        "10-25 02:30+0200",
        "10-26 02:30+0100",
        "10-27 02:30+0100",
    ]


def test_berlin_fixed_time_after_the_first_occurrence_waits_for_the_next_day() -> None:
    # Evaluated between the two 02:30s: the second one is not a new fire.
    assert local("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 31), 1) == ["10-26 02:30+0100"]
    assert local("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 29), 1) == ["10-26 02:30+0100"]


def test_berlin_interval_job_fires_in_both_repeated_hours() -> None:
    assert fires("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23), 7) == [
        "2026-10-24T23:30:00Z",
        "2026-10-25T00:00:00Z",  # 02:00+02:00
        "2026-10-25T00:30:00Z",  # 02:30+02:00
        "2026-10-25T01:00:00Z",  # 02:00+01:00
        "2026-10-25T01:30:00Z",  # 02:30+01:00
        "2026-10-25T02:00:00Z",  # 03:00+01:00
        "2026-10-25T02:30:00Z",
    ]


def test_berlin_interval_job_evaluated_inside_the_repeated_hour_keeps_order() -> None:
    # 00:45Z is 02:45 CEST; the next fire is 02:00 CET (01:00Z), not 03:00.
    assert fires("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 45), 3) == [
        "2026-10-25T01:00:00Z",
        "2026-10-25T01:30:00Z",
        "2026-10-25T02:00:00Z",
    ]


def test_berlin_interval_job_skips_the_missing_hour() -> None:
    assert local("*/30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0), 4) == [
        "03-29 01:30+0100",
        "03-29 03:00+0200",
        "03-29 03:30+0200",
        "03-29 04:00+0200",
    ]


def test_hourly_alias_is_an_interval_job_across_both_transitions() -> None:
    assert local("@hourly", "Europe/Berlin", utc(2026, 3, 28, 23, 30), 3) == [
        "03-29 01:00+0100",
        "03-29 03:00+0200",
        "03-29 04:00+0200",
    ]
    assert fires("@hourly", "Europe/Berlin", utc(2026, 10, 24, 23, 30), 3) == [
        "2026-10-25T00:00:00Z",
        "2026-10-25T01:00:00Z",  # 02:00 again, one real hour later
        "2026-10-25T02:00:00Z",
    ]


def test_several_fixed_times_in_the_gap_collapse_into_one_fire() -> None:
    assert local("15,45 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 12), 2) == [
        "03-29 03:00+0200",
        "03-30 02:15+0200",
    ]


# -- DST: America/New_York (2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00) ------------


def test_new_york_fixed_time_in_the_spring_gap_fires_once_at_the_next_valid_instant() -> None:
    assert local("30 2 * * *", "America/New_York", utc(2026, 3, 6, 12), 3) == [
        "03-07 02:30-0500",
        "03-08 03:00-0400",
        "03-09 02:30-0400",
    ]


def test_new_york_fixed_time_in_the_repeated_hour_fires_once() -> None:
    assert local("30 1 * * *", "America/New_York", utc(2026, 10, 30, 12), 3) == [
        "10-31 01:30-0400",
        "11-01 01:30-0400",
        "11-02 01:30-0500",
    ]


def test_new_york_fixed_hour_with_several_minutes_fires_each_once() -> None:
    assert local("0,30 1 * * *", "America/New_York", utc(2026, 11, 1, 4), 3) == [
        "11-01 01:00-0400",
        "11-01 01:30-0400",
        "11-02 01:00-0500",  # the repeated 01:00 and 01:30 do not fire again
    ]


def test_new_york_interval_job_fires_in_both_repeated_hours() -> None:
    assert local("*/30 * * * *", "America/New_York", utc(2026, 11, 1, 4, 45), 5) == [
        "11-01 01:00-0400",
        "11-01 01:30-0400",
        "11-01 01:00-0500",
        "11-01 01:30-0500",
        "11-01 02:00-0500",
    ]


def test_a_daily_job_fires_once_per_local_day_through_a_whole_year() -> None:
    for tz in ("Europe/Berlin", "America/New_York"):
        for expr in ("30 2 * * *", "0 2 * * *", "30 1 * * *", "0 3 * * *"):
            schedule = Schedule.parse(expr, tz)
            year = list(
                itertools.takewhile(
                    lambda t: t < utc(2027, 1, 1), schedule.fires_after(utc(2026, 1, 1))
                )
            )
            days = [t.astimezone(schedule.zone).date() for t in year]
            assert len(days) == len(set(days)) == 365, (tz, expr)


# -- aliases and invalid input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "fields", "fixed"),
    [
        ("@hourly", ("0", "*", "*", "*", "*"), False),
        ("@daily", ("0", "0", "*", "*", "*"), True),
        ("@midnight", ("0", "0", "*", "*", "*"), True),
        ("@weekly", ("0", "0", "*", "*", "0"), True),
        ("@monthly", ("0", "0", "1", "*", "*"), True),
        ("@yearly", ("0", "0", "1", "1", "*"), True),
        ("@annually", ("0", "0", "1", "1", "*"), True),
        ("@DAILY", ("0", "0", "*", "*", "*"), True),
    ],
)
def test_aliases_expand_to_standard_fields(
    alias: str, fields: tuple[str, ...], fixed: bool
) -> None:
    schedule = Schedule.parse(alias)
    assert schedule.fields == fields
    assert schedule.fixed_time is fixed


def test_weekly_alias_fires_on_sunday_midnight() -> None:
    assert fires("@weekly", "UTC", utc(2026, 1, 1), 1) == ["2026-01-04T00:00:00Z"]


def test_names_for_months_and_weekdays_work() -> None:
    assert fires("0 9 * jan mon-fri", "UTC", utc(2026, 1, 2, 10), 1) == ["2026-01-05T09:00:00Z"]


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("61 * * * *", "out of range"),
        ("* * *", "expected 5 fields"),
        ("0 0 * * * *", "expected 5 fields"),  # seconds field: refused
        ("@reboot", "expected 5 fields"),
        ("*/0 * * * *", "bad cron"),
        ("H * * * *", "bad cron"),
        ("0 0 30 2 *", "no further fire"),  # parses, never fires
        ("", "expected 5 fields"),
        ("every day", "expected 5 fields"),
    ],
)
def test_invalid_cron_is_a_schedule_error(expr: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why):
        Schedule.parse(expr)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "europe berlin"])
def test_unknown_timezone_is_a_schedule_error(tz: str) -> None:
    with pytest.raises(ScheduleError, match="unknown timezone"):
        Schedule.parse("0 3 * * *", tz)


def test_leap_day_job_waits_for_a_leap_year() -> None:
    assert fires("0 0 29 2 *", "UTC", utc(2026, 1, 1), 1) == ["2028-02-29T00:00:00Z"]


def test_a_missing_timezone_database_is_named_as_the_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDatabase:
        def __init__(self, key: str) -> None:
            raise cron.ZoneInfoNotFoundError(key)

    monkeypatch.setattr(cron, "ZoneInfo", NoDatabase)
    with pytest.raises(ScheduleError, match="no IANA timezone database"):
        cron.load_zone("Europe/Berlin")
