"""Scheduled jobs: the model, cron fire times, the TOML and Redis sources, and the CLI.

Everything a producer, the CLI or beat needs to read and edit schedules; the beat process
itself (tick loop, reservation, enqueue) lives in the top-level ``beat`` package, which
imports this one and never the reverse.
"""

from executus_worker.schedules.cron import Schedule
from executus_worker.schedules.model import JobSource, JobSpec, OverlapPolicy
from executus_worker.schedules.timing import fire_run_id

__all__ = ["JobSource", "JobSpec", "OverlapPolicy", "Schedule", "fire_run_id"]
