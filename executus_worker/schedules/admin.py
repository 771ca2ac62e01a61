"""Managing schedules at runtime: add, remove, pause, resume, list, validate.

Used by ``executus-worker schedules`` and usable from the client (``ScheduleAdmin(store, ...)``).
Changes take effect without a restart: every beat re-reads Redis jobs on each pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from executus_worker.core.models import RunRecord
from executus_worker.errors import ScheduleError
from executus_worker.schedules.catalog import Catalog, CatalogEntry, JobCatalog
from executus_worker.schedules.model import JobSource, JobSpec
from executus_worker.schedules.source_toml import TomlJobFile
from executus_worker.schedules.store import FireOutcome, JobState, ScheduleStore
from executus_worker.schedules.timing import format_fire

# The last fire's outcomes whose last_error `schedules ls` shows as the job's error.
_OUTCOMES_WITH_ERRORS = frozenset(
    {
        FireOutcome.ENQUEUE_FAILED,
        FireOutcome.PUBLISH_FAILED,
        FireOutcome.REJECTED,
        FireOutcome.MISSED,
        FireOutcome.SKIPPED_OVERLAP,
    }
)


class RunLookup(Protocol):
    """Reads a run record (``RunStore.get`` satisfies it)."""

    def get(self, run_id: str) -> RunRecord | None: ...


@dataclass(frozen=True)
class JobView:
    """One row of ``schedules ls``: the job, its reservation and what its last fire did."""

    name: str
    source: str
    state: str  # active | paused | disabled | invalid | shadowed
    cron: str
    timezone: str
    next_fire: str  # UTC; '' when the job cannot fire
    next_fire_pending: bool  # computed here: no beat has reserved it yet
    last_fire: str
    last_run_id: str
    last_run_status: str  # the run's status now, or '' (never fired / expired)
    last_outcome: str
    fires: int
    enqueue_failures: int  # failed enqueue attempts (retried within the catch-up window)
    missed_fires: int  # reserved fires never enqueued
    missed_from: str
    error: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScheduleAdmin:
    def __init__(
        self,
        store: ScheduleStore,
        *,
        schedule_file: Path | None = None,
        runs: RunLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._catalog = JobCatalog(store, TomlJobFile(schedule_file) if schedule_file else None)
        self._runs = runs
        self._clock = clock

    def catalog(self) -> Catalog:
        return self._catalog.load()

    def add(self, spec: JobSpec, *, replace: bool = False) -> None:
        """Store a runtime job. A name owned by the schedule file is refused."""
        existing = self.catalog().get(spec.name)
        if existing is not None and existing.source is JobSource.FILE:
            raise ScheduleError(
                f"job {spec.name!r} is defined in the schedule file; edit the file instead"
            )
        if not self._store.add_job(spec, replace=replace):
            raise ScheduleError(f"job {spec.name!r} exists; use --replace to overwrite it")

    def remove(self, name: str) -> None:
        entry = self._require(name)
        if entry.source is JobSource.FILE:
            raise ScheduleError(f"job {name!r} is defined in the schedule file; edit the file")
        self._store.remove_job(name)

    def pause(self, name: str) -> bool:
        """True if it was running before. File jobs can be paused too (the flag is in Redis)."""
        self._require(name)
        return self._store.pause(name)

    def resume(self, name: str) -> bool:
        self._require(name)
        return self._store.resume(name)

    def list(self) -> tuple[list[JobView], str | None]:
        """Every job (file and Redis), and the schedule file's error if it has one."""
        catalog = self.catalog()
        states = self._store.states(entry.name for entry in catalog.entries)
        now = datetime.fromtimestamp(self._clock(), UTC)
        views = [self._view(entry, states[entry.name], now) for entry in catalog.entries]
        return views, catalog.file_error

    def _require(self, name: str) -> CatalogEntry:
        entry = self.catalog().get(name)
        if entry is None:
            raise ScheduleError(f"no job named {name!r}")
        return entry

    def _view(self, entry: CatalogEntry, state: JobState, now: datetime) -> JobView:
        spec = entry.spec
        invalid = entry.error if spec is None else state.invalid
        next_fire, pending = "", False
        if spec is not None and entry.active and not invalid:
            if state.schedule_key == spec.schedule_key and state.next_fire:
                next_fire = state.next_fire
            else:  # no beat has seen this job (or its new cron) yet
                try:
                    next_fire, pending = format_fire(spec.schedule().next_after(now)), True
                except ScheduleError as exc:
                    invalid = str(exc)
        error = invalid or entry.error or ""
        if not error and state.last_outcome in _OUTCOMES_WITH_ERRORS:
            error = state.last_error
        return JobView(
            name=entry.name,
            source=entry.source.value,
            state=_state_label(entry, invalid=bool(invalid)),
            cron=spec.cron if spec else "",
            timezone=spec.timezone if spec else "",
            next_fire=next_fire,
            next_fire_pending=pending,
            last_fire=state.last_fire,
            last_run_id=state.last_run_id,
            last_run_status=self._run_status(state.last_run_id),
            last_outcome=state.last_outcome,
            fires=state.fires,
            enqueue_failures=state.enqueue_failures,
            missed_fires=state.missed_fires,
            missed_from=state.missed_from,
            error=error,
        )

    def _run_status(self, run_id: str) -> str:
        if not run_id or self._runs is None:
            return ""
        record = self._runs.get(run_id)
        return record.status.value if record is not None else ""


def _state_label(entry: CatalogEntry, *, invalid: bool) -> str:
    if entry.shadowed:
        return "shadowed"
    if entry.spec is None or invalid:
        return "invalid"
    if entry.paused:
        return "paused"
    return "active" if entry.spec.enabled else "disabled"
