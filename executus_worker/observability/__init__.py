"""Operating a worker: metrics, the health file and run-aware logs (see ops/README.md).

metrics.py      the hooks the worker calls (Metrics, NullMetrics) and the metric names
prometheus.py   PrometheusMetrics: the hooks as prometheus_client metrics
instruments.py  wrappers around the run loop's ports that feed the hooks and the log context
exposition.py   what the main process serves: merged per-process files, scrape-time gauges
health.py       the main process's heartbeat file and the check of it
logs.py         run fields on every log line; text or JSON
process.py      Observability: started by the worker's main process, per-process metrics

The re-exports stay light (no prometheus_client, no Redis client): every worker imports this
package, and ``executus-worker health`` on every liveness probe.
"""

from executus_worker.observability.metrics import METRIC_NAMES, Metrics, NullMetrics

__all__ = ["METRIC_NAMES", "Metrics", "NullMetrics"]
