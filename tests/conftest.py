"""Session-wide fixtures: a private real Redis, and hygiene checks.

Tests that need Redis start their own redis-server on a free port (never the shared 6379).
If none can be started the test is skipped loudly -- except under CI=true, where it fails:
a durability suite that passes because Redis was missing proves nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis

from executus_worker.embedded import EmbeddedRedis
from executus_worker.embedded_cluster import ClusterUnavailable, LocalCluster
from executus_worker.errors import ConfigError
from tests.rabbitmq import RabbitUnavailable, private_vhost


def _missing_redis(reason: str) -> None:
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and no real Redis: {reason}", pytrace=False)
    pytest.skip(f"NO REAL REDIS -- durability tests skipped: {reason}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """One private redis-server for the session (loopback, free port, stopped by pid)."""
    server = EmbeddedRedis()
    try:
        server.start()
    except ConfigError as exc:
        _missing_redis(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A private three-master Redis Cluster for the session (loopback, free ports, stopped by
    pid). Tests flush it themselves (``cluster_client``)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except (ClusterUnavailable, OSError, redis.RedisError) as exc:
        _missing_redis(f"no Redis Cluster: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A private vhost on the machine's RabbitMQ for the session, deleted at the end. Missing
    RabbitMQ skips loudly -- and fails under CI=true, like a missing Redis."""
    try:
        vhost = private_vhost()
        vhost.create()
    except RabbitUnavailable as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and no usable RabbitMQ: {exc}", pytrace=False)
        pytest.skip(f"NO RABBITMQ -- broker tests skipped: {exc}")
    yield vhost.url
    vhost.delete()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the private server, flushed before each test."""
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads running (heartbeats, sweeps, watchdogs)."""
    before = set(threading.enumerate())
    yield
    leaked = [
        t for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.daemon
    ]  # fmt: skip
    assert not leaked, f"test leaked threads: {[t.name for t in leaked]}"


_TIMINGS: list[tuple[str, float]] = []


@pytest.fixture
def timing(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Record a measured number (e2e and fault tests); the run prints them all at the end."""

    def record(what: str, seconds: float) -> None:
        _TIMINGS.append((f"{request.node.name}: {what}", seconds))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TIMINGS:
        terminalreporter.section("measured timings")
        for what, seconds in _TIMINGS:
            terminalreporter.write_line(f"{seconds:7.2f}s  {what}")
