"""The MainProcess advertises which agents this worker serves, on which queues (``fleet``).

Advertised once synchronously when the worker is ready -- before Celery logs "ready.", so a
producer that waits for that line finds the agents -- then refreshed every quarter of the TTL
by a daemon thread until the worker drains. A worker whose agents file cannot be loaded
advertises no agents and the error, so producers are refused at enqueue and ``executus-worker
agents`` shows why; its log says the same at ERROR.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from executus_worker.errors import ConfigError
from executus_worker.fleet.directory import AgentDirectory, WorkerAd
from executus_worker.settings import Settings
from executus_worker.worker.runtime import Runtime
from executus_worker.worker.shutdown import DrainToken

log = logging.getLogger(__name__)


def describe_worker(
    settings: Settings, consumer: Any, agent_names: Callable[[], list[str]]
) -> WorkerAd:
    """This worker's advertisement: its node name, its registry's agents, its queues."""
    error = None
    try:
        agents = agent_names()
    except ConfigError as exc:
        log.error("this worker serves no agents: %s", exc)
        agents, error = [], str(exc)
    return WorkerAd(
        worker=str(getattr(consumer, "hostname", None) or f"pid-{os.getpid()}"),
        agents=tuple(sorted(agents)),
        queues=tuple(sorted(_queues(settings, consumer))),
        pid=os.getpid(),
        started_at=time.time(),
        error=error,
    )


def _queues(settings: Settings, consumer: Any) -> list[str]:
    """What the worker consumes: Celery's selection (``-Q``), else all our queues."""
    try:
        return [str(name) for name in consumer.app.amqp.queues.consume_from]
    except AttributeError:
        return [settings.default_queue, *settings.tier_queues.values()]


class Advertiser:
    def __init__(
        self,
        directory: Callable[[], AgentDirectory],
        ad: WorkerAd,
        *,
        interval_s: float,
        wait: Callable[[float], bool],
    ) -> None:
        """``wait(seconds)`` sleeps and returns True once the worker drains (DrainToken.wait)."""
        self._directory = directory
        self._ad = ad
        self._interval_s = interval_s
        self._wait = wait
        self._thread: threading.Thread | None = None

    def advertise(self) -> bool:
        try:
            self._directory().advertise(dataclasses.replace(self._ad, seen_at=time.time()))
        except Exception as exc:  # Redis away: the next refresh tries again; the TTL is long
            log.warning("advertising this worker's agents failed: %s", exc)
            return False
        return True

    def start(self) -> None:
        if self._thread is not None:
            return
        if self.advertise():
            log.info(
                "advertised agents %s on queues %s as %s",
                list(self._ad.agents), list(self._ad.queues), self._ad.worker,
            )  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="executus-advertise", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._wait(self._interval_s):
            self.advertise()


def start_advertising(
    settings: Settings, consumer: Any, runtime: Runtime, drain: DrainToken
) -> Advertiser:
    """Advertise now and keep it fresh until ``drain``; the composition for ``on_worker_ready``."""
    ad = describe_worker(settings, consumer, lambda: runtime.agents().names())

    def directory() -> AgentDirectory:
        return AgentDirectory(
            runtime.client(), key_prefix=settings.key_prefix, ttl_s=settings.worker_advert_ttl_s
        )

    advertiser = Advertiser(
        directory, ad, interval_s=settings.worker_advert_ttl_s / 4, wait=drain.wait
    )
    advertiser.start()
    return advertiser
