"""Getting a reserved fire enqueued: the attempt, its outcome, retries, and giving up.

A fire is *pending* from its reservation until an attempt settles it (``FireOutcome``). The
reservation and every attempt are compare-and-sets on the job's state row, and the run id is
deterministic with an idempotent enqueue, so any beat may carry on a fire another started:

    pending fire, at time now                         what this beat does
    attempt in flight (reserved|retrying, retry_at>now)  waits; reserves no newer fire meanwhile
    its catch-up window has passed                    gives up: ``missed``, reported once (the
                                                      CAS winner), unless the run turns out to be
                                                      registered (an attempt died after that)
    backing off (enqueue_failed, retry_at > now)      waits; a newer due fire replaces it
    otherwise                                         claims the next attempt (CAS on attempts)
                                                      and enqueues

``retry_at`` of an attempt in flight is its lease: a beat SIGKILLed between the reservation and
the enqueue leaves ``reserved``, and once ``enqueue_timeout_s`` has passed any beat (or the same
one restarted) retries. Outcomes that settle a fire for good: ``enqueued``, ``duplicate`` (the
run exists: an earlier attempt, another beat, or the same fire registered with the job's older
template), ``publish_failed`` (registered, so not lost: the recovery sweep publishes it) and
``rejected`` (a request the client refuses, so a retry cannot help).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from executus_worker.core.models import RunRequest
from executus_worker.errors import PayloadError, PublishError, RunConflictError, ScheduleError
from executus_worker.schedules.admin import RunLookup
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.store import FireOutcome, JobState, ScheduleStore
from executus_worker.schedules.timing import format_fire, parse_fire, retry_delay_s

log = logging.getLogger("beat.ticker")  # one logger for everything a tick reports


class Enqueuer(Protocol):
    """Registers and publishes a run; idempotent on ``run_id``. True if this call created it."""

    def enqueue(self, request: RunRequest, run_id: str) -> bool: ...


@dataclass(frozen=True)
class RetryPolicy:
    # How long one attempt (register + publish) may take before other beats assume its beat
    # died and take the fire over; above the beat's Redis socket timeout. A takeover of an
    # attempt that was only slow is harmless: enqueue is idempotent on the run id.
    enqueue_timeout_s: float = 30.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass
class TickerStats:
    """Counters since this process started (what a metrics exporter would read)."""

    ticks: int = 0
    fired: int = 0
    duplicates: int = 0  # enqueue found the run already there (another beat, a retry)
    enqueue_failures: int = 0  # failed attempts; each fire is retried within its window
    retries: int = 0  # attempts after the first (after a failure or a dead beat)
    publish_failures: int = 0  # registered but not published: the sweep publishes them
    rejected: int = 0  # requests the client refused: those fires never run
    abandoned: int = 0  # reserved fires never enqueued (window passed, or a newer fire won)
    skipped_overlap: int = 0
    missed: int = 0  # batches of fires dropped by the catch-up window
    lost_races: int = 0  # another beat reserved the fire first
    job_errors: int = 0  # unexpected exceptions, contained per job


@dataclass(frozen=True)
class Pending:
    """A fire still owed a run: look again in ``wait_s``; while ``blocks_next``, an attempt
    is in flight and no newer fire of the job may be reserved."""

    wait_s: float
    blocks_next: bool


class FireAttempts:
    """Attempts, retries and gives up on reserved fires, for one beat process."""

    def __init__(
        self,
        *,
        store: ScheduleStore,
        runs: RunLookup,
        enqueuer: Enqueuer,
        clock: Callable[[], float],
        stats: TickerStats,
        policy: RetryPolicy,
    ) -> None:
        self._store = store
        self._runs = runs
        self._enqueuer = enqueuer
        self._clock = clock
        self.stats = stats
        self.policy = policy

    def reservation(self, run_id: str, now_ts: float) -> dict[str, str | float]:
        """The state fields that reserve ``run_id`` with its first attempt in flight."""
        return {
            "last_run_id": run_id,
            "last_outcome": FireOutcome.RESERVED.value,
            "last_error": "",
            "attempts": 1,
            "retry_at": now_ts + self.policy.enqueue_timeout_s,
        }

    def first(self, spec: JobSpec, fire: datetime, run_id: str, request: RunRequest) -> None:
        """The attempt the reserving beat makes at once."""
        self._attempt(spec, fire, run_id, request, attempt=1, in_flight=FireOutcome.RESERVED)

    def settle(self, spec: JobSpec, state: JobState, now_ts: float) -> Pending | None:
        """Move a pending fire on (see the module table); None once it is settled here."""
        if state.in_flight(now_ts):
            return Pending(state.retry_at - now_ts, blocks_next=True)
        fire = parse_fire(state.last_fire)
        gives_up_at = spec.timing.gives_up_at(fire).timestamp()
        if now_ts > gives_up_at:
            why = f"its catch-up window ({spec.catchup_window_s:g}s) passed"
            self._give_up(spec, state, now_ts, why)
            return None
        if state.retry_at > now_ts:
            return Pending(state.retry_at - now_ts, blocks_next=False)
        run_id, request = spec.fire_request(fire)
        if run_id != state.last_run_id:  # the id is the job name + the fire time
            raise ScheduleError(f"state row names {state.last_run_id!r} for fire {fire}")
        attempt = state.attempts + 1
        claimed = self._store.compare_and_set(
            spec.name,
            expect=state.attempt_guard(),
            values={
                "last_outcome": FireOutcome.RETRYING.value,
                "attempts": attempt,
                "retry_at": now_ts + self.policy.enqueue_timeout_s,
                "updated_at": now_ts,
            },
        )
        if not claimed:
            self.stats.lost_races += 1
            return Pending(0.0, blocks_next=True)  # another beat moved first: reread
        self.stats.retries += 1
        log.info("schedule %s: retrying %s (attempt %d)", spec.name, run_id, attempt)
        self._attempt(spec, fire, run_id, request, attempt=attempt, in_flight=FireOutcome.RETRYING)
        return None

    def registered(self, run_id: str) -> bool:
        """Whether the run exists: the truth about a fire whose attempt never reported."""
        return self._runs.get(run_id) is not None

    def report_superseded(
        self, spec: JobSpec, state: JobState, newer_run_id: str, *, missed: bool
    ) -> None:
        if not missed:
            log.info(
                "schedule %s: %s is registered (an attempt did not report back); next: %s",
                spec.name,
                state.last_run_id,
                newer_run_id,
            )
            return
        self.stats.abandoned += 1
        log.warning(
            "schedule %s: fire %s was never enqueued (%d attempt(s); last: %s) and is missed: "
            "the newer fire %s replaces it",
            spec.name,
            state.last_run_id,
            state.attempts,
            state.last_error or state.last_outcome,
            newer_run_id,
        )

    # -- internals ---------------------------------------------------------------------

    def _attempt(
        self,
        spec: JobSpec,
        fire: datetime,
        run_id: str,
        request: RunRequest,
        *,
        attempt: int,
        in_flight: FireOutcome,
    ) -> None:
        # What the row says while this attempt runs: its outcome is recorded only if that
        # still holds (no other beat took the fire over, no newer fire was reserved).
        guard = {"last_run_id": run_id, "attempts": str(attempt), "last_outcome": in_flight}
        values: dict[str, str | float] = {"last_error": ""}
        increments: dict[str, int] | None = None
        try:
            created = self._enqueuer.enqueue(request, run_id)
        except RunConflictError as exc:
            # Registered by an earlier attempt from the job's previous template: the fire
            # has its run; a retry must never replace it.
            self.stats.duplicates += 1
            fields = ", ".join(exc.fields)
            values |= {"last_outcome": FireOutcome.DUPLICATE.value}
            log.warning(
                "schedule %s: %s already exists with the job's earlier request (differs in: "
                "%s); keeping that run",
                spec.name,
                run_id,
                fields,
            )
        except PublishError as exc:
            self.stats.publish_failures += 1
            values |= {
                "last_outcome": FireOutcome.PUBLISH_FAILED.value,
                "last_error": f"registered, not yet published: {exc.detail}",
            }
            log.warning(
                "schedule %s: %s is registered but its message was not published (%s); "
                "not a lost fire: the recovery sweep publishes runs left queued",
                spec.name,
                run_id,
                exc.detail,
            )
        except PayloadError as exc:
            self.stats.rejected += 1
            values |= {"last_outcome": FireOutcome.REJECTED.value, "last_error": str(exc)}
            increments = {"missed_fires": 1}
            log.error("schedule %s: %s was rejected and will not run: %s", spec.name, run_id, exc)
        except Exception as exc:
            values, increments = self._failed(spec, fire, run_id, attempt, exc)
        else:
            if created:
                self.stats.fired += 1
                log.info("schedule %s: enqueued %s", spec.name, run_id)
            else:
                self.stats.duplicates += 1
                log.info("schedule %s: %s already existed; nothing sent", spec.name, run_id)
            outcome = FireOutcome.ENQUEUED if created else FireOutcome.DUPLICATE
            values |= {"last_outcome": outcome.value}
        self._record(spec.name, run_id, guard, values, increments)

    def _failed(
        self, spec: JobSpec, fire: datetime, run_id: str, attempt: int, exc: Exception
    ) -> tuple[dict[str, str | float], dict[str, int]]:
        self.stats.enqueue_failures += 1
        now_ts = self._clock()
        retry_at = now_ts + retry_delay_s(
            attempt, base_s=self.policy.backoff_base_s, max_s=self.policy.backoff_max_s
        )
        gives_up_at = spec.timing.gives_up_at(fire)
        error = f"attempt {attempt}: {type(exc).__name__}: {exc}"
        log.warning(
            "schedule %s: enqueue of %s failed (%s); retrying at %s, until its catch-up "
            "window ends at %s",
            spec.name,
            run_id,
            error,
            _at(retry_at),
            format_fire(gives_up_at),
            exc_info=attempt == 1,  # the traceback once per fire, not once per retry
        )
        values: dict[str, str | float] = {
            "last_outcome": FireOutcome.ENQUEUE_FAILED.value,
            "last_error": error,
            "retry_at": retry_at,
        }
        return values, {"enqueue_failures": 1}

    def _give_up(self, spec: JobSpec, state: JobState, now_ts: float, why: str) -> None:
        registered = self.registered(state.last_run_id)
        if registered:  # an attempt registered it and died before recording that
            values: dict[str, str | float] = {"last_outcome": FireOutcome.DUPLICATE.value}
            increments = None
        else:
            error = f"never enqueued ({state.attempts} attempt(s)): {why}"
            values = {"last_outcome": FireOutcome.MISSED.value, "last_error": error}
            increments = {"missed_fires": 1}
        won = self._store.compare_and_set(
            spec.name,
            expect=state.attempt_guard(),
            values={**values, "updated_at": now_ts},
            increments=increments,
        )
        if not won:
            return  # another beat settled it (and reports it)
        if registered:
            log.info("schedule %s: %s is registered; not retried", spec.name, state.last_run_id)
            return
        self.stats.abandoned += 1
        log.warning(
            "schedule %s: fire %s is missed: never enqueued in %d attempt(s) (last: %s) before %s",
            spec.name,
            state.last_run_id,
            state.attempts,
            state.last_error or state.last_outcome,
            why,
        )

    def _record(
        self,
        name: str,
        run_id: str,
        guard: dict[str, str],
        values: dict[str, str | float],
        increments: dict[str, int] | None,
    ) -> None:
        # Only if no other beat took this attempt over and no newer fire was reserved since:
        # never overwrite newer news.
        try:
            recorded = self._store.compare_and_set(
                name,
                expect=guard,
                values={**values, "updated_at": self._clock()},
                increments=increments,
            )
        except Exception:
            log.exception("schedule %s: could not record the outcome of %s", name, run_id)
            return
        if not recorded:
            log.info(
                "schedule %s: %s outcome %s not recorded: another beat took the fire over",
                name,
                run_id,
                values.get("last_outcome"),
            )


def _at(ts: float) -> str:
    return format_fire(datetime.fromtimestamp(ts, UTC))
