"""The composition root: builds the Redis client, store, agent registry and Deps from Settings.

Everything is built on first use *in the process that uses it*: a prefork child builds its own
after the fork (redis-py pools must not be shared across a fork), and the MainProcess builds
the recovery side only when the worker is ready. Nothing here runs at import.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from executus_worker.broker_publish import run_publisher
from executus_worker.checkpoint.handle import StoreCheckpointerFactory
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.settle import Settle
from executus_worker.checkpoint.store import ClaimResult
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.ports import Deps
from executus_worker.core.stop import StopToken
from executus_worker.errors import StoreError
from executus_worker.models.declarative import declared_agents
from executus_worker.observability import Metrics, NullMetrics, logs
from executus_worker.observability.instruments import (
    ObservedCritic,
    TimedCheckpoints,
    observe_delivery,
    observed_execute,
)
from executus_worker.redis_connect import StateClient, connect, connect_state
from executus_worker.settings import Settings
from executus_worker.worker import preclaim, transport
from executus_worker.worker.heartbeat import Heartbeats
from executus_worker.worker.messages import run_id_of
from executus_worker.worker.recovery import Recovery, ScanLock
from executus_worker.worker.runs import Handled, RunHandler, RunRecorder, default_owner
from executus_worker.worker.wiring import Batteries, build_batteries

log = logging.getLogger(__name__)

# A call that cannot reach Redis must fail, not hang: the heartbeat and the shutdown path
# both depend on getting control back.
_SOCKET_TIMEOUT_S = 10.0
_SCAN_LOCK_TTL_MS = 30_000


def scan_lock_key(key_prefix: str) -> str:
    return f"{key_prefix}:recover:lock"


def redis_client(
    url: str, *, timeout_s: float = _SOCKET_TIMEOUT_S, sentinel_master: str | None = None
) -> redis.Redis:
    return connect(
        url,
        sentinel_master=sentinel_master,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


def state_client(
    url: str, *, timeout_s: float = _SOCKET_TIMEOUT_S, sentinel_master: str | None = None
) -> StateClient:
    """Where run state lives: ``redis_client``, or a Redis Cluster client."""
    return connect_state(
        url,
        sentinel_master=sentinel_master,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


def agent_registry(settings: Settings) -> AgentRegistry:
    """The built-ins plus the agents file: factories and declared (no-code) agents."""
    return AgentRegistry.with_builtins(
        agents_file=settings.agents_file, declared=declared_agents(settings)
    )


class Runtime:
    """Per-process singletons for one worker, rebuilt if the process forked since."""

    def __init__(
        self,
        settings: Settings,
        *,
        drain: StopToken,
        metrics: Callable[[], Metrics] = NullMetrics,
    ) -> None:
        self.settings = settings
        self._drain = drain
        self._metrics = metrics  # this process's metrics hooks (Observability.metrics)
        self._lock = threading.RLock()  # handler() builds the store under the same lock
        self._pid: int | None = None
        self._client: StateClient | None = None
        self._broker: redis.Redis | None = None
        self._store: RedisStore | None = None
        self._handler: RunHandler | None = None
        self._batteries: Batteries | None = None
        self._address: tuple[list[Any] | None] | None = None  # _state_address, once computed
        # Loaded once, in the MainProcess when the worker starts (``agents()``), and inherited by
        # forked children: a worker with a broken agents file refuses to start instead of
        # failing every delivery, and a file changed later cannot break a running worker.
        self._agents: AgentRegistry | None = None

    def _fresh(self) -> None:
        # Called with the lock held. After a fork the inherited objects belong to the parent.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._client = self._broker = None
            self._store = None
            self._handler = None
            self._batteries = None
            self._address = None

    def client(self) -> StateClient:
        with self._lock:
            self._fresh()
            if self._client is None:
                try:
                    self._client = state_client(
                        self.settings.redis_url, sentinel_master=self.settings.sentinel_master
                    )
                except redis.RedisError as exc:
                    # A cluster client reads the slot map when built: an outage now is the
                    # store's outage (a delivery retries, it does not fail the run).
                    raise StoreError(f"cannot reach the run state's Redis: {exc}") from exc
            return self._client

    def store(self) -> RedisStore:
        with self._lock:
            client = self.client()  # refreshes after a fork first
            if self._store is None:
                s = self.settings
                self._store = RedisStore(
                    client,
                    key_prefix=s.key_prefix,
                    result_ttl_s=s.result_ttl_s,
                    shards=s.effective_redis_shards,
                )
            return self._store

    def agents(self) -> AgentRegistry:
        """The agent registry (raises ConfigError for a broken agents file)."""
        with self._lock:
            if self._agents is None:
                self._agents = agent_registry(self.settings)
            return self._agents

    def recorder(self) -> RunRecorder:
        """What records a run's failure with the store alone (see tasks.py)."""
        return RunRecorder(self.store(), self.settings, preclaimed=_take_preclaimed)

    def preclaims(self) -> preclaim.Preclaims | None:
        """Claims on receipt for a solo worker whose broker is this store's Redis (the
        transport checks the broker side), or None when the run state is not one plain
        Redis (Sentinel, a cluster)."""
        address = self._state_address()
        if address is None:
            return None
        return preclaim.Preclaims(self.store(), self.settings, default_owner, address=address)

    def claim_ahead(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> preclaim.Ahead | None:
        """Send the CLAIM for the run this delivery names as its task starts, its reply read
        when the handler claims (preclaim.Ahead); None if the message names no valid run id or
        the store cannot (a cluster, an outage: the handler then claims, and retries, as usual).
        The run id is the one the handler claims (``read_delivery`` reads it the same way)."""
        run_id = run_id_of(args, kwargs)
        if run_id is None:
            return None
        try:
            store = self.store()
        except StoreError:
            return None
        return preclaim.send_ahead(store, self.settings, run_id, default_owner())

    def _state_address(self) -> list[Any] | None:
        """(host, port, db, path) of the run state's Redis, None unless it is one plain Redis
        (Sentinel resolves the master per connection; a cluster is many). Per process."""
        with self._lock:
            client = self.client()  # refreshes after a fork first
            if self._address is None:
                pool = client.connection_pool if isinstance(client, redis.Redis) else None
                self._address = (transport.server_address(pool),)
            return self._address[0]

    def handler(self) -> RunHandler:
        """Built once per process, on its first delivery; every later call is a lookup."""
        with self._lock:
            store = self.store()
            if self._handler is None:
                self._handler = self._build_handler(store)
            return self._handler

    def handle(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], *, task_id: str | None
    ) -> Handled:
        """One ``executus.run`` delivery: its log lines name the run, its ending is counted."""
        handler = self.handler()
        # Under a worker Celery's task_prerun hook has named the run already (factory.py).
        token = None if logs.current() is not None else logs.bind(run_id_of(args, kwargs))
        try:
            handled = handler.handle(args, kwargs, task_id=task_id)
        finally:
            if token is not None:
                logs.unbind(token)
        observe_delivery(handled, self._metrics())
        return handled

    def settle_for(self, spec: object) -> Settle | None:
        """The ``Settle`` of a delivery's ``transport.settle_spec``, if the run's ending can
        settle that message: the broker is this store's Redis server and database (on a
        cluster, or another server, the message is acked as usual)."""
        if not isinstance(spec, list) or len(spec) != 7 or not transport.SETTLED.here():
            return None
        tag, index_key, hash_key, *address = spec
        if not all(isinstance(x, str) for x in (tag, index_key, hash_key)):
            return None
        if address != self._state_address():
            return None
        return Settle(tag, index_key, hash_key, settled=transport.SETTLED.add)

    def _build_handler(self, store: RedisStore) -> RunHandler:
        s = self.settings
        registry = self.agents()
        batteries = self._batteries = build_batteries(s, self.client(), registry)
        metrics = self._metrics()
        deps = Deps(
            checkpoints=TimedCheckpoints(
                StoreCheckpointerFactory(
                    store, throttle_ms=s.throttle_ms, result_ttl_s=s.result_ttl_s
                ),
                metrics,
            ),
            audit=batteries.audit,
            critic=ObservedCritic(batteries.critic, metrics),
            budget=batteries.budget,
            persona=batteries.persona,
            skills=batteries.skills,
        )
        log.info("run handler ready in pid %d (agents: %s)", os.getpid(), registry.names())
        return RunHandler(
            preclaimed=_take_preclaimed,
            store=store,
            agents=registry,
            deps=deps,
            settings=s,
            drain=self._drain,
            execute=observed_execute(execute, metrics),
            # Renewals on their own connection with a short timeout: a slow save or a dead
            # socket on the main client must not hold up the leases.
            heartbeats=Heartbeats(
                RedisStore(
                    state_client(
                        s.redis_url,
                        timeout_s=s.effective_renew_timeout_s,
                        sentinel_master=s.sentinel_master,
                    ),
                    key_prefix=s.key_prefix,
                    result_ttl_s=s.result_ttl_s,
                    shards=s.effective_redis_shards,
                ),
                lease_ttl_s=s.lease_ttl_s,
            ),
        )

    def close(self) -> None:
        """Let this process's batteries go: events still deferred are written, the watchdog
        thread stops. (An attempt's events are written by its ending, so a worker does not
        need this to lose nothing; tests and embedding code do.)"""
        with self._lock:
            batteries = self._batteries if self._pid == os.getpid() else None
        if batteries is not None:
            batteries.close()

    def _broker_client(self) -> redis.Redis:
        s = self.settings
        with self._lock:
            if self._broker is None:
                self._broker = redis_client(
                    s.effective_broker_url, sentinel_master=s.effective_broker_sentinel_master
                )
            return self._broker

    def recovery(self) -> Recovery:
        s = self.settings
        client = self.client()
        # On RabbitMQ each recovery object gets its own connection and channel: it stays in
        # one thread (the sweep loop, or one executus.recover call).
        return Recovery(
            self.store(),
            run_publisher(s, redis_broker=self._broker_client),
            queued_timeout_s=s.queued_timeout_s,
            lock=ScanLock(client, scan_lock_key(s.key_prefix), ttl_ms=_SCAN_LOCK_TTL_MS),
            metrics=self._metrics(),
        )


def _take_preclaimed(run_id: str, owner: str) -> tuple[ClaimResult, float] | None:
    """The claim this process made when it received the current delivery (preclaim.py)."""
    found = preclaim.take(run_id, owner)
    return None if found is None else (found.result, found.sent_at)
