"""One pass over every scheduled job: reserve the due fire in Redis, then enqueue it.

Order matters. The next fire is *reserved* (a compare-and-set on the job's state row that
moves ``next_fire`` on and records the fire as pending) before the run is enqueued, as
Celery's own scheduler does: of several beats exactly one wins each fire, and the next fire
is computed before the enqueue, so a failing enqueue can never make a job fire every tick.
A pending fire is not lost when its enqueue fails or its beat dies: any beat retries it with
backoff until it is enqueued or its catch-up window passes (``beat.fires``). The run id is
deterministic (``sched:<job>:<nominal time>``) and enqueue is idempotent on it, so retries,
takeovers and even a reservation made twice by mistake create one run per fire.

A failing job (its enqueue, its Redis row, a bug) is logged and the pass moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from beat.fires import Enqueuer, FireAttempts, Pending, RetryPolicy, TickerStats
from beat.retention import StateRetention
from executus_worker.core.models import RunRecord, RunRequest
from executus_worker.errors import ScheduleError
from executus_worker.schedules.admin import RunLookup
from executus_worker.schedules.catalog import CatalogEntry, JobCatalog
from executus_worker.schedules.cron import Schedule
from executus_worker.schedules.model import JobSpec, OverlapPolicy
from executus_worker.schedules.store import FireOutcome, JobState, ScheduleStore
from executus_worker.schedules.timing import format_fire, parse_fire, plan_fire

__all__ = ["DEFAULT_MAX_SLEEP_S", "Enqueuer", "RetryPolicy", "Ticker", "TickerStats"]

log = logging.getLogger(__name__)

DEFAULT_MAX_SLEEP_S = 5.0  # also how fast file and Redis job edits take effect


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
        retry: RetryPolicy | None = None,
        retention: StateRetention | None = None,
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._runs = runs
        self._clock = clock
        self.max_sleep_s = max_sleep_s
        self.stats = TickerStats()
        self._fires = FireAttempts(
            store=store,
            runs=runs,
            enqueuer=enqueuer,
            clock=clock,
            stats=self.stats,
            policy=retry or RetryPolicy(),
        )
        self.retention = retention or StateRetention(store, clock=clock)
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
        try:
            self.retention.maintain(entry.name for entry in catalog.entries)
        except Exception:
            log.warning("schedules: could not refresh state row expiries", exc_info=True)
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
        held: Pending | None = None
        if entry.active and state.pending:
            held = self._fires.settle(spec, state, now_ts)
            if held is None:
                state = self._store.state(spec.name)  # what the attempt or give-up left
            elif held.blocks_next:
                return held.wait_s
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
        wait_s = self._fire_if_due(spec, schedule, state, now, now_ts)
        return wait_s if held is None else min(wait_s, held.wait_s)

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
                values["last_outcome"] = FireOutcome.SKIPPED_OVERLAP.value
                values["last_error"] = (
                    f"fire {format_fire(fire)} skipped: {busy.run_id} is still {busy.status}"
                )
                fire = None
        expect = {"schedule_key": state.schedule_key, "next_fire": state.next_fire}
        increments: dict[str, int] = {}
        request: tuple[str, RunRequest] | None = None
        replaces_missed = False
        if fire is not None:
            request = spec.fire_request(fire)
            values["last_fire"] = format_fire(fire)
            values |= self._fires.reservation(request[0], now_ts)
            increments["fires"] = 1
            if state.pending:
                # Backing off after failed attempts: the newer due fire takes its place (only
                # the newest due fire runs, as after an outage). Pinning the attempt makes a
                # retry another beat claimed meanwhile win over this replacement.
                expect |= state.attempt_guard()
                replaces_missed = not self._fires.registered(state.last_run_id)
                if replaces_missed:
                    increments["missed_fires"] = 1
        # The reservation: only the beat whose compare-and-set moves next_fire on may enqueue.
        won = self._store.compare_and_set(
            spec.name, expect=expect, values=values, increments=increments or None
        )
        if not won:
            self.stats.lost_races += 1
            return 0.0  # another beat moved this job on; the next pass reads its state
        self._log_plan(spec, plan.missed_from, values)
        if fire is not None and request is not None:
            if state.pending:
                self._fires.report_superseded(spec, state, request[0], missed=replaces_missed)
            self._fires.first(spec, fire, *request)
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
        if values.get("last_outcome") == FireOutcome.SKIPPED_OVERLAP:
            self.stats.skipped_overlap += 1
            log.info("schedule %s: %s (overlap=skip)", spec.name, values["last_error"])
