"""Before a worker starts consuming: are Redis and the broker there? Wait a bounded time.

Celery's own start-up retries the broker a hundred times with growing sleeps and says little
about which setting is wrong. A worker that cannot do anything useful should say so, naming
the variable to fix, and exit: its supervisor restarts it, and ``kubectl logs`` shows why.
Once started, outages are ridden through (that is the transport's and the runtime's job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from kombu import Connection
from kombu.exceptions import OperationalError

from executus_worker.checkpoint.layout import check_layout
from executus_worker.errors import ConfigError
from executus_worker.redis_connect import connect_state
from executus_worker.settings import AMQP_SCHEMES, Settings, redact_url

RETRY_S = 1.0
PING_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Service:
    setting: str  # the variable a user sets, e.g. EXECUTUS_BROKER_URL
    url: str
    role: str  # "Redis", "the broker"
    options: dict[str, Any] = field(default_factory=dict)  # as the real client connects
    sentinel_master: str | None = None

    def ping(self) -> None:
        if urlsplit(self.url).scheme in AMQP_SCHEMES:
            with Connection(self.url, connect_timeout=PING_TIMEOUT_S) as conn:
                try:
                    conn.ensure_connection(max_retries=1)
                except conn.connection_errors + conn.channel_errors as exc:
                    # A refused login or an unknown vhost is a channel error in py-amqp.
                    raise OperationalError(str(exc)) from exc
            return
        client = connect_state(
            self.url,
            sentinel_master=self.sentinel_master,
            socket_connect_timeout=PING_TIMEOUT_S,
            socket_timeout=PING_TIMEOUT_S,
            **self.options,
        )
        try:
            client.ping()
        finally:
            client.close()


def services(settings: Settings) -> list[Service]:
    store = Service(
        "EXECUTUS_REDIS_URL", settings.redis_url, "Redis", sentinel_master=settings.sentinel_master
    )
    broker_url = settings.effective_broker_url
    if broker_url == settings.redis_url:
        return [store]
    broker = Service(
        "EXECUTUS_BROKER_URL",
        broker_url,
        "the broker",
        _as_kombu(broker_url),
        sentinel_master=settings.effective_broker_sentinel_master,
    )
    return [store, broker]


def _as_kombu(broker_url: str) -> dict[str, Any]:
    """The TLS the worker's broker connection will use (factory._transport_config): a bare
    rediss:// is encrypted without certificate checks, as kombu does; redis-py would verify."""
    parts = urlsplit(broker_url)
    if parts.scheme == "rediss" and not any(k.startswith("ssl_") for k in parse_qs(parts.query)):
        return {"ssl_cert_reqs": "none"}
    return {}


def wait_for_services(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once every service answers PING; ``ConfigError`` naming the first that did not
    within ``settings.startup_timeout_s`` (0: one try)."""
    deadline = clock() + settings.startup_timeout_s
    for service in services(settings):
        while True:
            try:
                service.ping()
                break
            except (redis.RedisError, OSError, OperationalError) as exc:
                if clock() + RETRY_S > deadline:
                    raise ConfigError(unreachable(service, settings, exc)) from exc
            sleep(RETRY_S)


def check_state_layout(settings: Settings) -> None:
    """``ConfigError`` if the run state was written with another key layout than this
    process's EXECUTUS_REDIS_SHARDS (records it on first start: ``checkpoint/layout.py``);
    ``StoreError`` if Redis could not be asked."""
    client = connect_state(
        settings.redis_url,
        sentinel_master=settings.sentinel_master,
        socket_connect_timeout=PING_TIMEOUT_S,
        socket_timeout=PING_TIMEOUT_S,
    )
    try:
        check_layout(client, settings.key_schema())
    finally:
        client.close()


def unreachable(service: Service, settings: Settings, exc: Exception) -> str:
    waited = f"{settings.startup_timeout_s:g} s"
    return (
        f"cannot reach {service.role} at {service.setting}={redact_url(service.url)} "
        f"(waited {waited}: {exc}); start it or fix {service.setting} "
        "(EXECUTUS_STARTUP_TIMEOUT_S sets how long a worker waits)"
    )
