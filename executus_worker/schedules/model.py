"""A scheduled job: when it fires (cron + timezone), what it enqueues, and how it behaves.

The same model validates a TOML table, a job stored in Redis and a job added from the CLI or
the client, so all three sources fail the same way for the same mistake.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from executus_worker.core.jsoncap import check_value
from executus_worker.core.models import RunRequest
from executus_worker.errors import PayloadError, ScheduleError
from executus_worker.schedules.cron import Schedule, load_zone
from executus_worker.schedules.timing import FireTiming, fire_run_id, format_fire

# The name becomes part of every fire's run id (``sched:<name>:<time>``, at most 200 chars),
# of Redis keys and of log lines: printable, no ':' (it separates the run id's parts).
JobName = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9._\-]+$")]

DEFAULT_CATCHUP_WINDOW_S = 3600.0
MAX_CATCHUP_WINDOW_S = 7 * 86_400.0
MAX_JITTER_S = 3600.0


class OverlapPolicy(enum.StrEnum):
    SKIP = "skip"  # no new fire while the previous fire's run is still active
    ALLOW = "allow"  # fire regardless; runs of the same job may overlap


class JobSource(enum.StrEnum):
    FILE = "file"  # EXECUTUS_SCHEDULE_FILE: edited by deploys, read-only at runtime
    REDIS = "redis"  # added with `schedules add` or the client; editable at runtime


class JobSpec(BaseModel):
    """One scheduled job. ``run`` is the RunRequest template each fire enqueues."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: JobName
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    run: RunRequest
    enabled: bool = True
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    # Missed fires older than this are dropped; at most one catch-up fire runs, ever.
    catchup_window_s: float = Field(default=DEFAULT_CATCHUP_WINDOW_S, ge=0, le=MAX_CATCHUP_WINDOW_S)
    # Each fire is delayed by a deterministic amount in [0, jitter_s) to spread load; the
    # run id keeps the nominal time. Keep it well below the job's interval.
    jitter_s: float = Field(default=0.0, ge=0, le=MAX_JITTER_S)
    description: str = Field(default="", max_length=500)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            Schedule.parse(value)  # also rejects a cron that never fires ("0 0 30 2 *")
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            load_zone(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("run", mode="before")
    @classmethod
    def _run_within_the_nesting_cap(cls, value: object) -> object:
        # Before pydantic walks the template: the same nesting cap as any request (jsoncap).
        try:
            check_value(value, what="run request")
        except PayloadError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("run")
    @classmethod
    def _no_fixed_run_id(cls, value: RunRequest) -> RunRequest:
        if value.run_id is not None:
            raise ValueError("run.run_id must not be set: each fire gets sched:<job>:<time>")
        return value

    def schedule(self) -> Schedule:
        """Raises ``ScheduleError`` (e.g. a cron that never fires, like ``0 0 30 2 *``)."""
        return Schedule.parse(self.cron, self.timezone)

    @property
    def timing(self) -> FireTiming:
        return FireTiming(self.name, self.catchup_window_s, self.jitter_s)

    @property
    def schedule_key(self) -> str:
        """Changes when the fire times change: a new cron or timezone restarts the schedule."""
        return f"{self.cron}|{self.timezone}"

    def fire_request(self, nominal: datetime) -> tuple[str, RunRequest]:
        """The run id and request for the fire at ``nominal``."""
        run_id = fire_run_id(self.name, nominal)
        metadata = {**self.run.metadata, "schedule": self.name, "fire_at": format_fire(nominal)}
        return run_id, self.run.model_copy(update={"run_id": run_id, "metadata": metadata})
