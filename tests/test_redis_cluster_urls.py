"""redis+cluster:// URLs: parsing, the settings rules around a cluster, and the client built.

A real cluster is exercised in tests/checkpoint/test_cluster.py and tests/e2e/test_redis_cluster.py.
"""

from __future__ import annotations

import re

import pytest
import redis
from pydantic import ValidationError
from redis.cluster import RedisCluster

from executus_worker.embedded import free_port
from executus_worker.embedded_cluster import LocalCluster
from executus_worker.redis_connect import (
    ClusterURL,
    connect,
    connect_state,
    parse_cluster_url,
)
from executus_worker.settings import Settings, redact_url

SEEDS = "redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]"


def test_parses_the_seed_nodes_and_credentials() -> None:
    assert parse_cluster_url(SEEDS) == ClusterURL(
        nodes=(("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 6379)),
        username="app",
        password="s3cret",
    )
    assert parse_cluster_url("rediss+cluster://:pw@h").tls is True


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://h:1/3", "no databases"),
        ("redis+cluster://h:1,h:x", "cluster node 2: the port"),
        ("redis+cluster://h:1?x=1", "no ?query"),
        ("redis+cluster://:1", "cluster node 1: no host"),
    ],
)
def test_bad_cluster_urls_name_the_part(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_cluster_url(url)


def test_a_cluster_holds_run_state_only_and_needs_its_own_broker() -> None:
    with pytest.raises(ValidationError, match="set EXECUTUS_BROKER_URL"):
        Settings(redis_url="redis+cluster://h:7000")
    with pytest.raises(ValidationError, match="cannot use a Redis Cluster as its broker"):
        Settings(redis_url="redis+cluster://h:7000", broker_url="redis+cluster://h:7000")
    with pytest.raises(ValidationError, match="EXECUTUS_REDIS_SHARDS=0"):
        Settings(redis_url="redis+cluster://h:7000", broker_url="redis://b", redis_shards=0)
    for broker in ("redis://b:6379/0", "amqp://guest@b//", "sentinel://s:26379"):
        settings = Settings(
            redis_url="redis+cluster://h:7000", broker_url=broker, sentinel_master="m"
        )
        assert settings.redis_is_cluster and settings.effective_redis_shards == 64


def test_the_partition_count_defaults_to_none_on_one_redis() -> None:
    assert Settings().effective_redis_shards == 0
    assert Settings(redis_shards=8).key_schema().shards == 8
    with pytest.raises(ValidationError):
        Settings(redis_shards=5000)


@pytest.mark.redis
def test_the_client_is_a_cluster_client_and_plain_connect_refuses_one(
    redis_cluster: LocalCluster,
) -> None:
    client = connect_state(redis_cluster.url, socket_timeout=5)
    assert isinstance(client, RedisCluster)
    assert client.ping()
    client.close()
    with pytest.raises(ValueError, match="run state only"):
        connect(redis_cluster.url)


def test_an_unreachable_cluster_is_a_connection_error_like_any_redis() -> None:
    with pytest.raises(redis.ConnectionError, match="cannot be connected"):
        connect_state(f"redis+cluster://127.0.0.1:{free_port()}", socket_connect_timeout=0.5)


def test_redaction_hides_the_cluster_password() -> None:
    assert redact_url(SEEDS) == "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7001,[::1]"
    assert redact_url("rediss+cluster://h:1,h:2") == "rediss+cluster://h:1,h:2"
