"""Jobs from the TOML file named by ``EXECUTUS_SCHEDULE_FILE``, one table per job::

    [jobs.nightly-digest]
    cron = "0 3 * * *"
    timezone = "Europe/Berlin"
    overlap = "skip"
    run = { agent = "demo.counter", input = { steps = 3, step_s = 0.1 }, guild_id = "g1" }

A broken job is reported by name and field (``jobs.nightly-digest.cron: ...``) and the other
jobs still load. A broken *file* (bad TOML, unreadable, gone mid-save) keeps the last good set
of jobs: a typo in a deploy must not silently stop every schedule.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from executus_worker.schedules.model import JobSource, JobSpec


@dataclass(frozen=True)
class JobProblem:
    """A job that exists by name but cannot be scheduled, and why."""

    name: str
    source: JobSource
    error: str


@dataclass(frozen=True)
class FileJobs:
    jobs: tuple[JobSpec, ...] = ()
    problems: tuple[JobProblem, ...] = ()
    error: str | None = None  # a file-level problem; jobs are then the last good ones


def validation_problems(exc: ValidationError, *, where: str) -> list[str]:
    """``<where>.<field>: <message>`` for each pydantic error, e.g. ``jobs.x.run.agent: ...``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in (where, *err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {message}")
    return lines


def parse_jobs(document: dict[str, Any]) -> FileJobs:
    """Validate a decoded TOML document; per-job errors never hide the other jobs."""
    unknown = sorted(set(document) - {"jobs"})
    if unknown:
        return FileJobs(error=f"unknown top-level keys {unknown}: jobs go in [jobs.<name>]")
    tables = document.get("jobs", {})
    if not isinstance(tables, dict):
        return FileJobs(error="'jobs' must be a table of [jobs.<name>] tables")
    jobs: list[JobSpec] = []
    problems: list[JobProblem] = []
    for name, table in tables.items():
        where = f"jobs.{name}"
        if not isinstance(table, dict):
            problems.append(JobProblem(name, JobSource.FILE, f"{where}: must be a table"))
            continue
        if "name" in table:
            error = f"{where}.name: the job name is the table name; remove this key"
            problems.append(JobProblem(name, JobSource.FILE, error))
            continue
        try:
            jobs.append(JobSpec.model_validate({**table, "name": name}))
        except ValidationError as exc:
            error = "; ".join(validation_problems(exc, where=where))
            problems.append(JobProblem(name, JobSource.FILE, error))
    return FileJobs(jobs=tuple(jobs), problems=tuple(problems))


def load_jobs_file(path: Path) -> FileJobs:
    """Read and validate ``path`` once (``schedules validate`` uses this directly)."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        return FileJobs(error=f"{path}: invalid TOML: {exc}")
    except RecursionError:  # tomllib recurses once per level of nested arrays/tables
        return FileJobs(error=f"{path}: invalid TOML: values nested too deeply")
    except OSError as exc:
        return FileJobs(error=f"{path}: cannot read: {exc.strerror or exc}")
    result = parse_jobs(document)
    if result.error is not None:
        return FileJobs(error=f"{path}: {result.error}")
    return result


@dataclass
class TomlJobFile:
    """The schedule file, re-read whenever its mtime, size or inode changes (no restart)."""

    path: Path
    _stamp: tuple[int, int, int] | None = field(default=None, init=False)
    _good: FileJobs = field(default_factory=FileJobs, init=False)
    _current: FileJobs = field(default_factory=FileJobs, init=False)

    def load(self) -> FileJobs:
        try:
            info = os.stat(self.path)
        except OSError as exc:
            # Editors that save by rename make the file vanish for a moment: keep serving the
            # last good jobs, report the error, and re-read as soon as it is back.
            self._stamp = None
            return self._with_error(f"{self.path}: cannot read: {exc.strerror or exc}")
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._stamp:
            return self._current
        self._stamp = stamp
        result = load_jobs_file(self.path)
        if result.error is not None:
            return self._with_error(result.error)
        self._good = self._current = result
        return result

    def _with_error(self, error: str) -> FileJobs:
        self._current = FileJobs(self._good.jobs, self._good.problems, error)
        return self._current
