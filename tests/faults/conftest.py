"""Fixtures for the fault suite: a private, persistent Redis per test and a cluster on it.

Every test here breaks its Redis (restart, rollback, partition), so none may share the
session's server. Without a redis-server the suite skips loudly -- and fails under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import Cluster

from .redis_server import RedisServer, RedisUnavailable


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
    except RedisUnavailable as exc:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and no real Redis: {exc}", pytrace=False)
        pytest.skip(f"NO REAL REDIS -- fault tests skipped: {exc}")
    yield server
    server.stop()


@pytest.fixture
def fault_cluster(fault_redis: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(fault_redis.url, tmp_path)
    yield world
    world.close()
