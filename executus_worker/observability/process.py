"""``Observability``: the worker's metrics, health file and logs, started by its main process.

Built inert with the Celery app (nothing runs at import or at ``create_app``). The worker's
hooks drive it:

    worker_init     (main, before the pool forks)  start_main(): multiprocess directory and
                    PROMETHEUS_MULTIPROC_DIR (inherited by every child), HTTP server, health
                    file ("starting")
    worker_ready    ready()       health "ready"
    shutting down   draining()    health "draining" (inside a signal handler: no blocking)
    worker_shutdown stop()        health file and temporary directory removed

``metrics()`` is the calling process's hooks: ``NullMetrics`` until the main process started
metrics, else a ``PrometheusMetrics`` built *in that process*. A prefork child builds its own
after the fork, on a fresh prometheus value class: the inherited one shares one lock with the
parent, and a parent thread holding it at the moment of the fork would leave it locked forever
in the child.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from typing import Any, cast

from executus_worker.observability.health import HealthBeacon
from executus_worker.observability.metrics import Metrics, NullMetrics
from executus_worker.settings import Settings

log = logging.getLogger(__name__)


class Observability:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = HealthBeacon(settings.health_file, interval_s=settings.health_interval_s)
        self._main_pid: int | None = None
        self._dir: Any = None  # exposition.MultiprocDir, set when metrics are on
        self._server: Any = None  # exposition.MetricsServer
        self._lock = threading.Lock()
        self._metrics: Metrics = NullMetrics()
        self._metrics_pid: int | None = None

    # -- main process ----------------------------------------------------------------------

    def start_main(self, *, queues: Sequence[str], active_index_keys: Sequence[str]) -> None:
        """``worker_init``: before the pool forks, so children inherit the directory."""
        if self._main_pid is not None:
            return
        self._main_pid = os.getpid()
        self.health.start()
        if self.settings.metrics_port is not None:
            self._start_metrics(queues, active_index_keys)

    def _start_metrics(self, queues: Sequence[str], active_index_keys: Sequence[str]) -> None:
        # Imported here: prometheus_client costs a worker without metrics a third of a second
        # at every start (measured on the CI box).
        from executus_worker.observability.exposition import (  # noqa: PLC0415
            MULTIPROC_ENV,
            MetricsServer,
            MultiprocDir,
            WorkerCollector,
            scrape_client,
            scrape_state_client,
        )

        s = self.settings
        directory = MultiprocDir(s.metrics_dir)
        os.environ[MULTIPROC_ENV] = str(directory.prepare())
        collector = WorkerCollector(
            directory,
            broker=scrape_client(
                s.effective_broker_url, sentinel_master=s.effective_broker_sentinel_master
            ),
            queues=queues,
            store=scrape_state_client(s.redis_url, sentinel_master=s.sentinel_master),
            active_index_keys=active_index_keys,
        )
        server = MetricsServer(collector, addr=s.metrics_addr, port=s.metrics_port or 0)
        try:
            server.start()
        except OSError as exc:
            # A taken port must not stop the worker from running runs: say so and go on.
            log.error(
                "metrics: cannot listen on %s:%s (EXECUTUS_METRICS_PORT): %s; running without",
                s.metrics_addr,
                s.metrics_port,
                exc,
            )
            directory.remove()
            os.environ.pop(MULTIPROC_ENV, None)
            return
        self._server = server
        self._dir = directory

    def ready(self) -> None:
        self.health.set_state("ready")

    def draining(self) -> None:
        self.health.set_state("draining")

    def stop(self) -> None:
        """``worker_shutdown``: only the main process that started owns anything to stop."""
        if self._main_pid != os.getpid():
            return
        # The metrics server keeps answering until the process exits (a daemon thread): a
        # last scrape during the exit still sees the final counters.
        self.health.stop()
        if self._dir is not None:
            self._dir.remove()

    # -- every process ---------------------------------------------------------------------

    def metrics(self) -> Metrics:
        """This process's metrics hooks (built on first use in each process)."""
        with self._lock:
            if self._dir is None:
                return self._metrics  # metrics off: the null hooks
            if self._metrics_pid != os.getpid():
                from prometheus_client import values  # noqa: PLC0415 -- only with metrics on

                from executus_worker.observability.prometheus import (  # noqa: PLC0415
                    PrometheusMetrics,
                )

                # A value class of our own, with its own lock and files (see module docstring);
                # its values land in <dir>/*_<this pid>.db.
                values.ValueClass = cast("Any", values.MultiProcessValue)()
                self._metrics = PrometheusMetrics()
                self._metrics_pid = os.getpid()
            return self._metrics
