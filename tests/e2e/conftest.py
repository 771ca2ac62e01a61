"""Fixtures for the real-process suite: one Cluster per test, and the measured timings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster


@pytest.fixture
def cluster(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """One test's world. Run state is always in Redis; the broker is that Redis unless the
    test parametrizes ``cluster`` indirectly with "rabbitmq" (a private vhost), or with
    "redis-cluster": run state on the session's three-master Redis Cluster, the broker on the
    session's plain Redis."""
    broker = getattr(request, "param", "redis")
    assert broker in {"redis", "rabbitmq", "redis-cluster"}, broker
    if broker == "redis-cluster":
        state = request.getfixturevalue("redis_cluster")
        world = Cluster(state.url, tmp_path, broker_url=redis_url)
    else:
        broker_url = request.getfixturevalue("rabbitmq_url") if broker == "rabbitmq" else None
        world = Cluster(redis_url, tmp_path, broker_url=broker_url)
    yield world
    world.close()
