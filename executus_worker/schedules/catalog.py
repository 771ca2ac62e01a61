"""All jobs the scheduler knows, from the schedule file and from Redis, merged by name.

A name defined in both places belongs to the file (deploys are the source of truth); the
Redis job of that name is listed as shadowed and never fires. Either way one name has one
state row and one run id per fire, so even a mistake here cannot double a fire.
"""

from __future__ import annotations

from dataclasses import dataclass

from executus_worker.schedules.model import JobSource, JobSpec
from executus_worker.schedules.source_toml import JobProblem, TomlJobFile
from executus_worker.schedules.store import ScheduleStore


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    source: JobSource
    spec: JobSpec | None  # None when the job does not validate; see ``error``
    error: str | None = None
    paused: bool = False
    shadowed: bool = False  # a Redis job hidden by a file job of the same name

    @property
    def active(self) -> bool:
        """Fires when due (valid, enabled, not paused, not shadowed)."""
        return self.spec is not None and self.spec.enabled and not self.paused and not self.shadowed


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    file_error: str | None = None  # the file jobs are then the last good ones

    def get(self, name: str) -> CatalogEntry | None:
        for entry in self.entries:
            if entry.name == name and not entry.shadowed:
                return entry
        return None


class JobCatalog:
    """Loads the catalog on demand: the file by mtime, Redis jobs and pauses every time."""

    def __init__(self, store: ScheduleStore, schedule_file: TomlJobFile | None = None) -> None:
        self._store = store
        self._file = schedule_file

    @property
    def schedule_file(self) -> TomlJobFile | None:
        return self._file

    def load(self) -> Catalog:
        file_jobs = self._file.load() if self._file is not None else None
        redis_jobs, redis_problems = self._store.load_jobs()
        paused = self._store.paused()
        entries: list[CatalogEntry] = []
        file_names: set[str] = set()
        if file_jobs is not None:
            for spec in file_jobs.jobs:
                file_names.add(spec.name)
                entries.append(
                    CatalogEntry(spec.name, JobSource.FILE, spec, paused=spec.name in paused)
                )
            for problem in file_jobs.problems:
                file_names.add(problem.name)
                entries.append(_problem_entry(problem, paused))
        for spec in redis_jobs:
            shadowed = spec.name in file_names
            error = "shadowed by the file job of the same name" if shadowed else None
            entries.append(
                CatalogEntry(
                    spec.name,
                    JobSource.REDIS,
                    spec,
                    error=error,
                    paused=spec.name in paused,
                    shadowed=shadowed,
                )
            )
        for problem in redis_problems:
            entry = _problem_entry(problem, paused)
            if problem.name in file_names:
                entry = CatalogEntry(entry.name, entry.source, None, entry.error, shadowed=True)
            entries.append(entry)
        entries.sort(key=lambda e: (e.name, e.shadowed))
        return Catalog(tuple(entries), file_jobs.error if file_jobs is not None else None)


def _problem_entry(problem: JobProblem, paused: set[str]) -> CatalogEntry:
    return CatalogEntry(
        problem.name, problem.source, None, error=problem.error, paused=problem.name in paused
    )
