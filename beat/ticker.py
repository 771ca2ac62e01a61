"""One pass over every scheduled job: reserve the due fire in Redis, then enqueue it.

Order matters. The next fire is *reserved* (a compare-and-set on the job's state row) before
the run is enqueued, as Celery's own scheduler does: a beat that dies or fails between the
two loses that one fire, and can never fire it twice or fire every tick. The run id is
deterministic (``sched:<job>:<nominal time>``) and enqueue is idempotent on it, so even a
reservation made twice by mistake creates one run.

Several beats may tick at once: the compare-and-set lets exactly one of them win each fire.
A failing job (its enqueue, its Redis row, a bug) is logged and the pass moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from executus_worker.core.models import RunRecord, RunRequest
from executus_worker.errors import ScheduleError
from executus_worker.schedules.admin import RunLookup
from executus_worker.schedules.catalog import CatalogEntry, JobCatalog
from executus_worker.schedules.cron import Schedule
from executus_worker.schedules.model import JobSpec, OverlapPolicy
from executus_worker.schedules.store import JobState, ScheduleStore
from executus_worker.schedules.timing import format_fire, parse_fire, plan_fire

log = logging.getLogger(__name__)

DEFAULT_MAX_SLEEP_S = 5.0  # also how fast file and Redis job edits take effect


class Enqueuer(Protocol):
    """Registers and publishes a run; idempotent on ``run_id``. True if this call created it."""

    def enqueue(self, request: RunRequest, run_id: str) -> bool: ...


@dataclass
class TickerStats:
    """Counters since this process started (what a metrics exporter would read)."""

    ticks: int = 0
    fired: int = 0
    duplicates: int = 0  # enqueue found the run already there (another beat, a retry)
    enqueue_failures: int = 0  # each one is a fire lost
    skipped_overlap: int = 0
    missed: int = 0  # batches of fires dropped by the catch-up window
    lost_races: int = 0  # another beat reserved the fire first
    job_errors: int = 0  # unexpected exceptions, contained per job


class Ticker:
    """Drives all jobs from one beat process. ``tick()`` never raises."""

    def __init__(
        self,
        *,
        catalog: JobCatalog,
        store: ScheduleStore,
        runs: RunLookup,
        enqueuer: Enqueuer,
        clock: Callable[[], float] = time.time,
        max_sleep_s: float = DEFAULT_MAX_SLEEP_S,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._runs = runs
        self._enqueuer = enqueuer
        self._clock = clock
        self.max_sleep_s = max_sleep_s
        self.stats = TickerStats()
        self._schedules: dict[str, Schedule] = {}
        self._file_error: str | None = None

    def tick(self) -> float:
        """Handle every due job once; return the seconds until the next one may be due."""
        self.stats.ticks += 1
        now_ts = self._clock()
        now = datetime.fromtimestamp(now_ts, UTC)
        try:
            catalog = self._catalog.load()
            live = [entry for entry in catalog.entries if not entry.shadowed]
            states = self._store.states(entry.name for entry in live)
        except Exception:
            # Redis down or the like: every job is affected equally; try again soon.
            log.exception("schedules: could not load jobs; retrying in %.0fs", self.max_sleep_s)
            return self.max_sleep_s
        self._report_file_error(catalog.file_error)
        in_use = {entry.spec.schedule_key for entry in live if entry.spec is not None}
        self._schedules = {k: s for k, s in self._schedules.items() if k in in_use}
        sleep_s = self.max_sleep_s
        for entry in live:
            try:
                wait_s = self._tick_job(entry, states[entry.name], now, now_ts)
            except Exception:
                self.stats.job_errors += 1
                log.exception("schedule %s: tick failed; the other jobs continue", entry.name)
                continue
            if wait_s is not None:
                sleep_s = min(sleep_s, wait_s)
        return max(sleep_s, 0.0)

    # -- one job -----------------------------------------------------------------------

    def _tick_job(
        self, entry: CatalogEntry, state: JobState, now: datetime, now_ts: float
    ) -> float | None:
        spec = entry.spec
        if spec is None:
            self._mark_invalid(entry.name, entry.error or "invalid job", state, now_ts)
            return None
        try:
            schedule = self._schedule(spec)
        except ScheduleError as exc:
            self._mark_invalid(spec.name, str(exc), state, now_ts)
            return None
        if state.schedule_key != spec.schedule_key or not state.next_fire:
            return self._start(spec, schedule, state, now, now_ts)
        if state.invalid:  # fixed since (e.g. a run template): clear the error shown in ls
            self._store.compare_and_set(
                spec.name, expect={"invalid": state.invalid}, values={"invalid": ""}
            )
        reserved = parse_fire(state.next_fire)
        if not entry.active:
            if reserved <= now:
                # Paused or disabled: move the reservation past now without firing, so
                # resuming never releases a backlog.
                following = format_fire(schedule.next_after(now))
                self._store.compare_and_set(
                    spec.name,
                    expect={"schedule_key": state.schedule_key, "next_fire": state.next_fire},
                    values={"next_fire": following, "updated_at": now_ts},
                )
            return None
        return self._fire_if_due(spec, schedule, state, now, now_ts)

    def _fire_if_due(
        self,
        spec: JobSpec,
        schedule: Schedule,
        state: JobState,
        now: datetime,
        now_ts: float,
    ) -> float:
        reserved = parse_fire(state.next_fire)
        plan = plan_fire(schedule, spec.timing, reserved=reserved, now=now)
        if plan is None:
            return (spec.timing.due_at(reserved) - now).total_seconds()
        values: dict[str, str | float] = {
            "next_fire": format_fire(plan.next_fire),
            "updated_at": now_ts,
        }
        if plan.missed_from is not None:
            values["missed_from"] = format_fire(plan.missed_from)
        fire = plan.fire
        if fire is not None and spec.overlap is OverlapPolicy.SKIP:
            busy = self._active_run(state.last_run_id)
            if busy is not None:
                values["last_outcome"] = "skipped_overlap"
                values["last_error"] = (
                    f"fire {format_fire(fire)} skipped: {busy.run_id} is still {busy.status}"
                )
                fire = None
        request: tuple[str, RunRequest] | None = None
        if fire is not None:
            request = spec.fire_request(fire)
            values |= {
                "last_fire": format_fire(fire),
                "last_run_id": request[0],
                "last_outcome": "reserved",
                "last_error": "",
            }
        # The reservation: only the beat whose compare-and-set moves next_fire on may enqueue.
        won = self._store.compare_and_set(
            spec.name,
            expect={"schedule_key": state.schedule_key, "next_fire": state.next_fire},
            values=values,
            increments={"fires": 1} if request is not None else None,
        )
        if not won:
            self.stats.lost_races += 1
            return 0.0  # another beat moved this job on; the next pass reads its state
        self._log_plan(spec, plan.missed_from, values)
        if request is not None:
            self._enqueue(spec, *request, now_ts)
        return (spec.timing.due_at(plan.next_fire) - now).total_seconds()

    def _start(
        self, spec: JobSpec, schedule: Schedule, state: JobState, now: datetime, now_ts: float
    ) -> float:
        """First sight of a job, or its cron/timezone changed: the next fire counts from now
        (a new schedule never fires for times before it existed)."""
        first = schedule.next_after(now)
        self._store.compare_and_set(
            spec.name,
            expect={"schedule_key": state.schedule_key, "next_fire": state.next_fire},
            values={
                "schedule_key": spec.schedule_key,
                "next_fire": format_fire(first),
                "invalid": "",
                "updated_at": now_ts,
            },
        )
        log.info("schedule %s: next fire %s", spec.name, format_fire(first))
        return (spec.timing.due_at(first) - now).total_seconds()

    def _enqueue(self, spec: JobSpec, run_id: str, request: RunRequest, now_ts: float) -> None:
        try:
            created = self._enqueuer.enqueue(request, run_id)
        except Exception as exc:
            # The reservation already moved on, so this fire is lost (and counted); the
            # alternative, retrying every tick, is how schedulers end up in storms.
            self.stats.enqueue_failures += 1
            log.exception("schedule %s: enqueue of %s failed; this fire is lost", spec.name, run_id)
            self._record(
                spec.name,
                run_id,
                {"last_outcome": "enqueue_failed", "last_error": f"{type(exc).__name__}: {exc}"},
                {"enqueue_failures": 1},
                now_ts,
            )
            return
        if created:
            self.stats.fired += 1
            log.info("schedule %s: enqueued %s", spec.name, run_id)
        else:
            self.stats.duplicates += 1
            log.info("schedule %s: %s already existed; nothing sent", spec.name, run_id)
        outcome = "enqueued" if created else "duplicate"
        self._record(spec.name, run_id, {"last_outcome": outcome}, None, now_ts)

    def _record(
        self,
        name: str,
        run_id: str,
        values: dict[str, str | float],
        increments: dict[str, int] | None,
        now_ts: float,
    ) -> None:
        # Only if no later fire has been reserved since: never overwrite newer news.
        try:
            self._store.compare_and_set(
                name,
                expect={"last_run_id": run_id},
                values={**values, "updated_at": now_ts},
                increments=increments,
            )
        except Exception:
            log.exception("schedule %s: could not record the outcome of %s", name, run_id)

    # -- helpers -----------------------------------------------------------------------

    def _schedule(self, spec: JobSpec) -> Schedule:
        schedule = self._schedules.get(spec.schedule_key)
        if schedule is None:
            schedule = self._schedules[spec.schedule_key] = spec.schedule()
        return schedule

    def _active_run(self, run_id: str) -> RunRecord | None:
        if not run_id:
            return None
        record = self._runs.get(run_id)
        if record is None or record.status.terminal:
            return None
        return record

    def _mark_invalid(self, name: str, error: str, state: JobState, now_ts: float) -> None:
        """Record why the job cannot fire; log it once (per change, across all beats)."""
        if state.invalid == error:
            return
        changed = self._store.compare_and_set(
            name,
            expect={"invalid": state.invalid},
            values={"invalid": error, "updated_at": now_ts},
        )
        if changed:
            log.error("schedule %s is invalid and will not fire: %s", name, error)

    def _report_file_error(self, error: str | None) -> None:
        if error != self._file_error:
            if error is not None:
                log.error("schedule file: %s (keeping the last good jobs)", error)
            elif self._file_error is not None:
                log.info("schedule file: readable again")
            self._file_error = error

    def _log_plan(
        self, spec: JobSpec, missed_from: datetime | None, values: dict[str, str | float]
    ) -> None:
        if missed_from is not None:
            self.stats.missed += 1
            catch_up = values.get("last_fire")
            log.warning(
                "schedule %s: fires since %s are older than the catch-up window (%gs) and "
                "are skipped; %s",
                spec.name,
                format_fire(missed_from),
                spec.catchup_window_s,
                f"catching up once with {catch_up}" if catch_up else "none of them runs",
            )
        if values.get("last_outcome") == "skipped_overlap":
            self.stats.skipped_overlap += 1
            log.info("schedule %s: %s (overlap=skip)", spec.name, values["last_error"])
