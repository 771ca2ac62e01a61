"""What the worker's main process serves on ``EXECUTUS_METRICS_PORT``.

prometheus_client's multiprocess mode: every process of the worker (prefork children and the
main process) writes its values to ``<dir>/<type>_<pid>.db``; a scrape merges the files. The
directory belongs to one worker: it is emptied at start (stale files would carry counters
over from a previous worker) and a gauge file of a process that died -- a child killed by
SIGKILL or OOM, a child the pool replaced -- is dropped at every scrape, so ``active_runs``
never counts the runs of a dead process. Counters of dead processes stay: totals never go
backwards while the worker lives.

Two gauges are read at scrape time rather than counted: queue depth (LLEN of every queue the
worker serves, priority sub-queues included) and unfinished runs (the size of the active run
index). A broker that does not answer leaves them out of that scrape, and says so in the log.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import redis
from prometheus_client import CollectorRegistry, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from executus_worker.observability.metrics import QUEUE_DEPTH, UNFINISHED_RUNS
from executus_worker.observability.procs import pid_alive
from executus_worker.redis_connect import StateClient, connect, connect_state

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PID_IN_NAME = re.compile(r"_(\d+)\.db$")
# kombu's Redis transport keeps priorities 3, 6 and 9 in lists named "<queue>\x06\x16<n>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITIES = (3, 6, 9)
# A scrape must answer even when the broker does not.
_SCRAPE_TIMEOUT_S = 2.0

# prometheus_client's multiprocess helpers are untyped; the signatures used here, stated once.
_mark_process_dead = cast("Callable[[int, str], None]", multiprocess.mark_process_dead)


def _merged_files(path: str) -> Callable[[], Iterable[Metric]]:
    """The ``collect`` of a MultiProcessCollector over ``path`` (registered nowhere)."""
    collector = cast("Any", multiprocess.MultiProcessCollector)(None, path=path)
    return cast("Callable[[], Iterable[Metric]]", collector.collect)


class MultiprocDir:
    """The directory of per-process value files, owned by one worker's main process."""

    def __init__(self, path: Path | None) -> None:
        # None: a fresh temporary directory, removed again at stop.
        self._given = path
        self.path: Path | None = None

    def prepare(self) -> Path:
        if self._given is None:
            self.path = Path(tempfile.mkdtemp(prefix="executus-metrics-"))
        else:
            self.path = self._given
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in self.path.glob("*.db"):
                stale.unlink(missing_ok=True)
        return self.path

    def reap(self, alive: Callable[[int], bool] = pid_alive) -> list[int]:
        """Drop the live-gauge files of processes that are gone; the pids dropped."""
        if self.path is None:
            return []
        dead = set()
        for name in glob.glob(os.path.join(self.path, "gauge_live*_*.db")):
            match = _PID_IN_NAME.search(name)
            if match and not alive(int(match.group(1))):
                dead.add(int(match.group(1)))
        for pid in sorted(dead):
            _mark_process_dead(pid, str(self.path))
        return sorted(dead)

    def remove(self) -> None:
        if self._given is None and self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


class WorkerCollector:
    """Merges every process's files (after reaping the dead) and adds the scrape-time gauges."""

    def __init__(
        self,
        directory: MultiprocDir,
        *,
        broker: redis.Redis | None,
        queues: Sequence[str],
        store: StateClient | None,
        active_index_keys: Sequence[str],
    ) -> None:
        assert directory.path is not None, "prepare() the directory first"
        self._directory = directory
        self._merged = _merged_files(str(directory.path))
        self._broker = broker
        self._queues = list(queues)
        self._store = store
        self._active_keys = list(active_index_keys)  # one per index partition
        self._lock = threading.Lock()  # two scrapes at once must not reap the same file twice

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._directory.reap()
            yield from self._merged()
        yield from self._queue_depth()
        yield from self._unfinished()

    def _queue_depth(self) -> Iterable[Metric]:
        if self._broker is None or not self._queues:
            return []
        try:
            pipe = self._broker.pipeline(transaction=False)
            for queue in self._queues:
                pipe.llen(queue)
                for priority in _PRIORITIES:
                    pipe.llen(f"{queue}{_PRIORITY_SEP}{priority}")
            lengths: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            log.warning("metrics: queue depth not read, broker unreachable: %s", exc)
            return []
        family = GaugeMetricFamily(
            QUEUE_DEPTH, "Messages waiting on the queue (all priorities).", labels=["queue"]
        )
        per_queue = 1 + len(_PRIORITIES)
        for i, queue in enumerate(self._queues):
            family.add_metric([queue], float(sum(lengths[i * per_queue : (i + 1) * per_queue])))
        return [family]

    def _unfinished(self) -> Iterable[Metric]:
        if self._store is None:
            return []
        try:
            pipe = self._store.pipeline(transaction=False)
            for key in self._active_keys:
                pipe.zcard(key)
            count = sum(int(n) for n in pipe.execute())
        except redis.RedisError as exc:
            log.warning("metrics: unfinished runs not read, Redis unreachable: %s", exc)
            return []
        family = GaugeMetricFamily(
            UNFINISHED_RUNS, "Runs not yet terminal (queued, running, interrupted)."
        )
        family.add_metric([], float(count))
        return [family]


def scrape_state_client(url: str, *, sentinel_master: str | None = None) -> StateClient:
    return connect_state(
        url,
        sentinel_master=sentinel_master,
        socket_timeout=_SCRAPE_TIMEOUT_S,
        socket_connect_timeout=_SCRAPE_TIMEOUT_S,
    )


def scrape_client(url: str, *, sentinel_master: str | None = None) -> redis.Redis:
    return connect(
        url,
        sentinel_master=sentinel_master,
        socket_timeout=_SCRAPE_TIMEOUT_S,
        socket_connect_timeout=_SCRAPE_TIMEOUT_S,
    )


class MetricsServer:
    """The HTTP endpoint (prometheus_client's own server, in a daemon thread)."""

    def __init__(self, collector: WorkerCollector, *, addr: str, port: int) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)
        self._addr = addr
        self._port = port
        self._server: Any = None

    def start(self) -> None:
        server, _thread = start_http_server(self._port, addr=self._addr, registry=self._registry)
        self._server = server
        log.info("metrics on http://%s:%d/metrics", self._addr, self._port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
