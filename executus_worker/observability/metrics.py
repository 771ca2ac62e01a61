"""The worker's metrics: one small hook object per process, and its do-nothing default.

Callers say what happened (``run_started``, ``duplicate_dropped``, ``recovered``...); only
``PrometheusMetrics`` (``prometheus.py``) knows metric types and labels. ``NullMetrics`` is
what every component gets when metrics are off (``EXECUTUS_METRICS_PORT`` unset), so no caller
ever checks whether metrics are on. This module does not import prometheus_client (a third of
a second on a busy host): a worker without metrics never loads it.

Every name the worker exports is in ``METRIC_NAMES`` (the alert rules in ``ops/`` are tested
against it). The scrape-time gauges (queue depth, unfinished runs) are read by the main process
when Prometheus asks, see ``exposition.py``.
"""

from __future__ import annotations

from typing import Protocol

RUNS = "executus_runs"  # counter: attempts that ended, by the status they left the run in
ATTEMPTS = "executus_run_attempts"  # counter: attempts started (claims that executed)
ACTIVE_RUNS = "executus_active_runs"  # gauge: runs executing steps right now
STEP_SECONDS = "executus_step_duration_seconds"  # histogram: model call + tool calls
CHECKPOINT_SECONDS = "executus_checkpoint_save_seconds"  # histogram: one fenced write
RECOVERIES = "executus_recoveries"  # counter: runs the sweep re-queued, by reason
LEASE_LOSSES = "executus_lease_losses"  # counter: attempts that stopped owning their run
DUPLICATES = "executus_duplicate_deliveries_dropped"  # counter: deliveries the claim refused
DELIVERIES = "executus_deliveries"  # counter: executus.run deliveries, by what became of them
QUEUE_DEPTH = "executus_queue_depth"  # gauge (scrape time): messages waiting, per queue
UNFINISHED_RUNS = "executus_unfinished_runs"  # gauge (scrape time): runs not yet terminal

# The names as Prometheus shows them (counters gain _total, histograms _bucket/_sum/_count).
METRIC_NAMES = frozenset(
    {
        f"{RUNS}_total",
        f"{ATTEMPTS}_total",
        ACTIVE_RUNS,
        *(f"{STEP_SECONDS}{s}" for s in ("_bucket", "_sum", "_count")),
        *(f"{CHECKPOINT_SECONDS}{s}" for s in ("_bucket", "_sum", "_count")),
        f"{RECOVERIES}_total",
        f"{LEASE_LOSSES}_total",
        f"{DUPLICATES}_total",
        f"{DELIVERIES}_total",
        QUEUE_DEPTH,
        UNFINISHED_RUNS,
    }
)


class Metrics(Protocol):
    """What the worker reports. Every method is cheap and never raises into a run."""

    def run_started(self, agent: str) -> None: ...

    def run_ended(self, agent: str) -> None: ...

    def run_status(self, status: str) -> None:
        """An attempt (or a delivery that never executed) left the run in ``status``."""
        ...

    def delivery(self, action: str) -> None: ...

    def duplicate_dropped(self) -> None: ...

    def lease_lost(self) -> None: ...

    def step_finished(self, agent: str, seconds: float) -> None: ...

    def checkpoint_written(self, op: str, seconds: float) -> None: ...

    def recovered(self, reason: str, count: int = 1) -> None: ...


class NullMetrics:
    """Metrics off: every hook does nothing."""

    def run_started(self, agent: str) -> None:
        return None

    def run_ended(self, agent: str) -> None:
        return None

    def run_status(self, status: str) -> None:
        return None

    def delivery(self, action: str) -> None:
        return None

    def duplicate_dropped(self) -> None:
        return None

    def lease_lost(self) -> None:
        return None

    def step_finished(self, agent: str, seconds: float) -> None:
        return None

    def checkpoint_written(self, op: str, seconds: float) -> None:
        return None

    def recovered(self, reason: str, count: int = 1) -> None:
        return None
