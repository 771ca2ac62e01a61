"""``PrometheusMetrics``: the ``Metrics`` hooks as prometheus_client metrics.

Imported only where metrics are on (``process.Observability.metrics``, tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from executus_worker.observability.metrics import (
    ACTIVE_RUNS,
    ATTEMPTS,
    CHECKPOINT_SECONDS,
    DELIVERIES,
    DUPLICATES,
    LEASE_LOSSES,
    RECOVERIES,
    RUNS,
    STEP_SECONDS,
)

# A step is a model call plus its tools: milliseconds (scripted) to minutes (a slow model).
_STEP_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# A save is one EVALSHA: the design target is p50 < 1 ms, p99 < 5 ms on local Redis.
_SAVE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class PrometheusMetrics:
    """The metrics of one process, in ``registry`` (a private one by default).

    Under the worker, prometheus_client runs in multiprocess mode: values go to per-pid files
    that the main process merges when scraped, and the registry only keeps tests able to read
    a single process's values (``registry.get_sample_value``).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._runs = Counter(
            RUNS, "Attempts that ended, by the run's status.", ["status"], registry=r
        )
        self._attempts = Counter(ATTEMPTS, "Attempts started, by agent.", ["agent"], registry=r)
        # livesum: a dead child's share is dropped when the main process reaps its file.
        self._active = Gauge(
            ACTIVE_RUNS, "Runs executing steps now.", registry=r, multiprocess_mode="livesum"
        )
        self._steps = Histogram(
            STEP_SECONDS,
            "One step (model call and its tool calls), by agent.",
            ["agent"],
            buckets=_STEP_BUCKETS_S,
            registry=r,
        )
        self._saves = Histogram(
            CHECKPOINT_SECONDS,
            "One checkpoint write: op=save (per step), finish (terminal), interrupt.",
            ["op"],
            buckets=_SAVE_BUCKETS_S,
            registry=r,
        )
        self._recoveries = Counter(
            RECOVERIES,
            "Runs the recovery sweep re-queued: interrupted, lease_expired, queued_timeout.",
            ["reason"],
            registry=r,
        )
        self._lease_losses = Counter(
            LEASE_LOSSES, "Attempts that lost their lease (fenced out or not renewed).", registry=r
        )
        self._duplicates = Counter(
            DUPLICATES, "Deliveries dropped because the run was owned or already over.", registry=r
        )
        self._deliveries = Counter(
            DELIVERIES, "executus.run deliveries, by what became of them.", ["action"], registry=r
        )

    def run_started(self, agent: str) -> None:
        self._attempts.labels(agent).inc()
        self._active.inc()

    def run_ended(self, agent: str) -> None:
        self._active.dec()

    def run_status(self, status: str) -> None:
        self._runs.labels(status).inc()

    def delivery(self, action: str) -> None:
        self._deliveries.labels(action).inc()

    def duplicate_dropped(self) -> None:
        self._duplicates.inc()

    def lease_lost(self) -> None:
        self._lease_losses.inc()

    def step_finished(self, agent: str, seconds: float) -> None:
        self._steps.labels(agent).observe(seconds)

    def checkpoint_written(self, op: str, seconds: float) -> None:
        self._saves.labels(op).observe(seconds)

    def recovered(self, reason: str, count: int = 1) -> None:
        self._recoveries.labels(reason).inc(count)
