"""Cron expressions evaluated in an IANA timezone: our ``Schedule`` type around croniter.

croniter only ever sees *naive wall-clock* datetimes here. It answers "which wall times match
this expression"; mapping wall times to instants is ours, because that is where the DST rules
live and croniter's own tz handling fires a fixed-time job twice on the fall-back day
(verified with croniter 7.0.0; see docs/research: ecosystem.md section 6). Keeping croniter
behind this one type also keeps it swappable (it was abandoned once, in 2025).

The DST rules follow Vixie cron. A job is *fixed-time* when neither its minute nor its hour
field starts with ``*`` (``30 2 * * *``, ``0 9-17 * * 1-5``, ``@daily``); otherwise it is an
*interval* job (``*/30 * * * *``, ``0 * * * *``, ``@hourly``).

- A wall time that occurs twice (fall-back): a fixed-time job fires once, at the first
  occurrence; an interval job fires at both (each is a real, distinct instant).
- A wall time that does not exist (spring-forward): a fixed-time job fires once, at the next
  valid instant (the transition itself); an interval job skips it, as its next regular fire
  follows soon anyway.

Offsets are assumed to change by at most ``MAX_DST_SHIFT`` at a time, true of every zone in
use today (historic date-line jumps such as Pacific/Apia 2011 are out of scope).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from executus_worker.errors import ScheduleError

MAX_DST_SHIFT = timedelta(hours=3)

# Resolved by us rather than croniter so the fixed-time test sees the real fields.
# @reboot has no meaning for a scheduler that is not the machine's init; it is rejected.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# A fixed reference for the "does it ever fire" check, so validation is a pure function.
_PROBE_FROM = datetime(2000, 1, 1, tzinfo=UTC)


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ScheduleError`` for an unknown or malformed name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        if name != "UTC" and _has_tz_database():
            raise ScheduleError(f"unknown timezone {name!r}") from exc
        # Slim container images may ship neither /usr/share/zoneinfo nor the tzdata wheel;
        # then every zone is "unknown" and the message would send people the wrong way.
        raise ScheduleError(
            f"unknown timezone {name!r}: no IANA timezone database found "
            "(install the OS tzdata package or `pip install tzdata`)"
        ) from exc


def _has_tz_database() -> bool:
    try:
        ZoneInfo("UTC")
    except ZoneInfoNotFoundError:
        return False
    return True


def expand_cron(expression: str) -> tuple[str, ...]:
    """The five cron fields of ``expression`` (aliases resolved); ``ScheduleError`` if bad."""
    text = " ".join(expression.split())
    text = ALIASES.get(text.lower(), text)
    fields = tuple(text.split(" "))
    if len(fields) != 5:
        # croniter also accepts 6 and 7 fields (seconds, years): a seconds field would let a
        # job fire every second, which a beat with a multi-second loop cannot honour.
        raise ScheduleError(
            f"bad cron expression {expression!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week) or an alias such as @hourly"
        )
    try:
        croniter(" ".join(fields), _PROBE_FROM.replace(tzinfo=None))
    except (CroniterError, ValueError, TypeError) as exc:
        raise ScheduleError(f"bad cron expression {expression!r}: {exc}") from exc
    return fields


@dataclass(frozen=True)
class Schedule:
    """When a job fires: five cron fields read as wall-clock time in ``timezone``."""

    expression: str
    timezone: str
    fields: tuple[str, ...]
    fixed_time: bool
    zone: ZoneInfo = field(repr=False, compare=False)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Schedule:
        """Validate both parts; ``ScheduleError`` names the one that is wrong."""
        fields = expand_cron(expression)
        zone = load_zone(timezone)
        schedule = cls(
            expression=expression,
            timezone=timezone,
            fields=fields,
            fixed_time=not (fields[0].startswith("*") or fields[1].startswith("*")),
            zone=zone,
        )
        schedule.next_after(_PROBE_FROM)  # "0 0 30 2 *" parses but never fires
        return schedule

    def next_after(self, after: datetime) -> datetime:
        """The first fire strictly after ``after`` (an aware datetime), as an aware UTC time."""
        return next(self.fires_after(after))

    def fires_after(self, after: datetime) -> Iterator[datetime]:
        """Every fire strictly after ``after``, ascending, without duplicates (UTC)."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        after_utc = after.astimezone(UTC)
        walls = self._walls_from(after_utc)
        pending: list[datetime] = []
        last: datetime | None = None
        for wall in walls:
            # No later wall time maps to an instant before `floor`, so everything pending
            # at or below it is final. Only fall-back folds ever reorder instants.
            floor = _earliest_instant(wall, self.zone)
            while pending and pending[0] <= floor:
                instant = heapq.heappop(pending)
                if last is None or instant > last:
                    last = instant
                    yield instant
            for instant in self._instants(wall):
                if instant > after_utc:
                    heapq.heappush(pending, instant)

    def _walls_from(self, after_utc: datetime) -> Iterator[datetime]:
        # Wall times earlier than `after`'s own can still map to later instants when the
        # offset is about to drop (the repeated hour): start the walk early enough for them.
        offset = min(_offset(after_utc, self.zone), _offset(after_utc + MAX_DST_SHIFT, self.zone))
        start = (after_utc + offset).replace(tzinfo=None)
        try:
            it = croniter(" ".join(self.fields), start)
            while True:
                yield it.get_next(datetime)
        except (CroniterError, ValueError) as exc:
            raise ScheduleError(f"cron {self.expression!r} has no further fire: {exc}") from exc

    def _instants(self, wall: datetime) -> list[datetime]:
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.zone).replace(tzinfo=None) == wall:
            # The wall time happens twice; fold=0 is the earlier instant.
            return [first] if self.fixed_time else [first, second]
        # The wall time does not exist (spring-forward gap).
        return [_transition_after(second, first, self.zone)] if self.fixed_time else []


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always answers for an aware datetime
    return offset


def _earliest_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return min(first, second)


def _transition_after(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The instant a spring-forward gap ends: the first whole second in (low, high] whose
    offset differs from ``low``'s. zoneinfo has no transition API, so bisect (~14 steps)."""
    base = _offset(low, zone)
    lo, hi = 0, int((high - low).total_seconds())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset(low + timedelta(seconds=mid), zone) == base:
            lo = mid
        else:
            hi = mid
    return low + timedelta(seconds=hi)
