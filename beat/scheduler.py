"""``ExecutusScheduler``: Celery beat driving our cron jobs and the recovery sweep.

    celery -A executus_worker.worker beat -S beat.scheduler:ExecutusScheduler
    executus-worker beat                       # the same, configured from EXECUTUS_*

All schedule state lives in Redis (see ``executus_worker.schedules.store``): there is no
``celerybeat-schedule`` shelve, any number of beats may run, and a restarted one carries on.
Celery's own ``beat_schedule`` entries are not run by this scheduler (they would fire once
per beat process); schedule work as jobs instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.beat import Scheduler

from beat.enqueue import ClientEnqueuer
from beat.sweep import PeriodicSweep
from beat.ticker import DEFAULT_MAX_SLEEP_S, RetryPolicy, Ticker
from executus_worker.checkpoint.layout import check_layout
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.client import Client
from executus_worker.core.stop import StopToken
from executus_worker.redis_connect import StateClient, connect_state
from executus_worker.schedules.catalog import JobCatalog
from executus_worker.schedules.source_toml import TomlJobFile
from executus_worker.schedules.store import ScheduleStore
from executus_worker.settings import Settings, redact_url
from executus_worker.worker.runtime import Runtime

log = logging.getLogger(__name__)

# A beat blocked on a dead Redis connection stops scheduling everything: fail and retry.
_SOCKET_TIMEOUT_S = 10.0


@dataclass
class BeatParts:
    """Everything one beat process builds from Settings, closed together."""

    client: StateClient
    ticker: Ticker
    sweep: PeriodicSweep
    enqueuer: ClientEnqueuer

    def close(self) -> None:
        self.enqueuer.close()
        self.client.close()


def recovery_sweep(settings: Settings) -> Callable[[], object]:
    """The worker's own recovery sweep (same store, publisher and scan lock)."""
    runtime = Runtime(settings, drain=StopToken())
    return lambda: runtime.recovery().sweep()


def build_parts(settings: Settings, *, sweep: Callable[[], object] | None = None) -> BeatParts:
    client = connect_state(
        settings.redis_url,
        sentinel_master=settings.sentinel_master,
        socket_timeout=_SOCKET_TIMEOUT_S,
        socket_connect_timeout=_SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )
    store = ScheduleStore(client, key_prefix=settings.key_prefix)
    runs = RedisStore(
        client,
        key_prefix=settings.key_prefix,
        result_ttl_s=settings.result_ttl_s,
        shards=settings.effective_redis_shards,
    )
    schedule_file = TomlJobFile(settings.schedule_file) if settings.schedule_file else None
    enqueuer = ClientEnqueuer(Client(settings, store=runs))
    ticker = Ticker(
        catalog=JobCatalog(store, schedule_file),
        store=store,
        runs=runs,
        enqueuer=enqueuer,
        retry=RetryPolicy(enqueue_timeout_s=settings.beat_enqueue_timeout_s),
    )
    periodic = PeriodicSweep(
        sweep if sweep is not None else recovery_sweep(settings),
        interval_s=settings.sweep_interval_s,
    )
    return BeatParts(client=client, ticker=ticker, sweep=periodic, enqueuer=enqueuer)


class ExecutusScheduler(Scheduler):
    """A Celery beat scheduler whose entries are executus jobs, with state in Redis."""

    def __init__(
        self,
        app: Celery,
        *args: Any,
        settings: Settings | None = None,
        sweep: Callable[[], object] | None = None,
        **kwargs: Any,
    ) -> None:
        # Set before super().__init__, which calls setup_schedule() unless lazy.
        self._settings = settings
        self._sweep = sweep
        self._parts: BeatParts | None = None
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        # Deliberately not super(): that would merge app.conf.beat_schedule and install
        # Celery's default entries, which every beat replica would then fire.
        settings = self._settings if self._settings is not None else Settings()
        self._parts = build_parts(settings, sweep=self._sweep)
        # ConfigError (beat refuses to start) if the run state was written with another
        # EXECUTUS_REDIS_SHARDS: its enqueues would be invisible to the workers' indexes.
        check_layout(self._parts.client, settings.key_schema())
        if self.app.conf.beat_schedule:
            log.warning(
                "beat: ignoring %d beat_schedule entries; ExecutusScheduler runs executus "
                "jobs only (add them with `executus-worker schedules add`)",
                len(self.app.conf.beat_schedule),
            )
        _warn_if_evicting(self._parts.client)
        log.info(
            "beat: executus scheduler on %s (prefix %r), schedule file %s, sweep every %gs",
            redact_url(settings.redis_url),
            settings.key_prefix,
            settings.schedule_file or "(none)",
            settings.sweep_interval_s,
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One pass: due jobs, then the sweep if due; the seconds to sleep before the next."""
        if self._parts is None:
            self.setup_schedule()
        assert self._parts is not None
        wait_s = self._parts.ticker.tick()
        wait_s = min(wait_s, self._parts.sweep.run_if_due())
        return min(wait_s, float(self.max_interval or DEFAULT_MAX_SLEEP_S))

    def sync(self) -> None:
        """Nothing to flush: every reservation and attempt is written to Redis as it is made."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            parts, self._parts = self._parts, None
            if parts is not None:
                parts.close()

    @property
    def info(self) -> str:
        # Celery prints this in its banner from a lazy instance, before anything is built.
        return "    . executus jobs: EXECUTUS_SCHEDULE_FILE + Redis; recovery sweep"


def _warn_if_evicting(client: StateClient) -> None:
    """A Redis that may evict keys can drop a reservation, and a dropped reservation restarts
    that job's schedule from now (a missed fire); RedBeat checks the same thing."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.RedisError:
        return  # CONFIG is often forbidden by ACLs; the ops docs cover the setting
    if policy not in (None, "noeviction"):
        log.warning("beat: Redis maxmemory-policy is %r; use noeviction (ops/redis.conf)", policy)
