"""Pure fire-time decisions: which fire is due now, its run id, its jitter, what comes next.

No clock and no I/O: every function takes ``now``, so tests drive them with a fake clock and
every beat process reaches the same answer from the same stored state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from executus_worker.schedules.cron import Schedule

FIRE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_fire(instant: datetime) -> str:
    """The canonical text of a nominal fire time: ISO 8601 UTC with a ``Z``, whole seconds."""
    return instant.astimezone(UTC).strftime(FIRE_TIME_FORMAT)


def parse_fire(text: str) -> datetime:
    return datetime.strptime(text, FIRE_TIME_FORMAT).replace(tzinfo=UTC)


def fire_run_id(job_name: str, nominal: datetime) -> str:
    """``sched:<job>:<nominal fire time>``: the same fire always gets the same run id, so any
    number of beats, restarts or retried ticks enqueue it once (enqueue is idempotent on it)."""
    return f"sched:{job_name}:{format_fire(nominal)}"


def jitter_offset_s(job_name: str, nominal: datetime, jitter_s: float) -> float:
    """A delay in ``[0, jitter_s)`` fixed by job and fire, so all beats agree on it."""
    if jitter_s <= 0:
        return 0.0
    digest = hashlib.sha256(f"{job_name}\0{format_fire(nominal)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter_s


@dataclass(frozen=True)
class FireTiming:
    """The per-job knobs the plan needs (a slice of ``JobSpec``)."""

    job_name: str
    catchup_window_s: float
    jitter_s: float = 0.0

    def due_at(self, nominal: datetime) -> datetime:
        return nominal + timedelta(seconds=jitter_offset_s(self.job_name, nominal, self.jitter_s))

    def gives_up_at(self, nominal: datetime) -> datetime:
        """After this, a fire not yet enqueued is missed: the catch-up window has passed."""
        return self.due_at(nominal) + timedelta(seconds=self.catchup_window_s)


def retry_delay_s(failed_attempts: int, *, base_s: float, max_s: float) -> float:
    """Exponential backoff after the ``failed_attempts``-th failed enqueue of one fire:
    ``base_s``, twice that, ... capped at ``max_s`` (a broker outage is not hammered)."""
    exponent = min(max(failed_attempts - 1, 0), 32)  # 2.0 ** 1100 would overflow
    return min(base_s * 2.0**exponent, max_s)


@dataclass(frozen=True)
class FirePlan:
    """What one tick does for a job whose reserved fire is due.

    ``fire`` is the nominal time to enqueue now, or None when every due fire was missed by more
    than the catch-up window. ``next_fire`` is the new reservation: the first fire not yet due.
    ``missed_from`` is set when fires will never run: the oldest of them (the old reservation).
    """

    fire: datetime | None
    next_fire: datetime
    missed_from: datetime | None


def plan_fire(
    schedule: Schedule, timing: FireTiming, *, reserved: datetime, now: datetime
) -> FirePlan | None:
    """Decide the tick for a job whose stored next fire is ``reserved``; None if not due yet.

    Of all fires due by ``now``, only the newest may run, and only if it is at most
    ``catchup_window_s`` late: a beat that was down for a day fires once, never a storm.
    """
    if timing.due_at(reserved) > now:
        return None
    newest_due = reserved
    # Fires older than the horizon cannot be within the window: after a long outage, start the
    # walk there instead of stepping through every missed fire (a month of a per-minute job).
    horizon = now - timedelta(seconds=timing.catchup_window_s + timing.jitter_s + 1)
    fires = schedule.fires_after(max(reserved, horizon))  # endless: a schedule never runs out
    next_fire = next(fires)
    while timing.due_at(next_fire) <= now:
        newest_due = next_fire
        next_fire = next(fires)
    lateness_s = (now - timing.due_at(newest_due)).total_seconds()
    if lateness_s > timing.catchup_window_s:
        return FirePlan(fire=None, next_fire=next_fire, missed_from=reserved)
    missed_from = reserved if newest_due != reserved else None
    return FirePlan(fire=newest_due, next_fire=next_fire, missed_from=missed_from)
