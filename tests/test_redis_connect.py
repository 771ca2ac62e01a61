"""sentinel:// URLs: parsing, settings validation, redaction, and the clients built from them.

A real Sentinel group is exercised in tests/faults/test_sentinel_failover.py.
"""

from __future__ import annotations

import re

import pytest
import redis
from pydantic import ValidationError
from redis.sentinel import SentinelConnectionPool

from executus_worker.redis_connect import SentinelURL, connect, parse_sentinel_url
from executus_worker.settings import Settings, redact_url
from executus_worker.worker.factory import _config

TWO = "sentinel://:s3cret@10.0.0.1:26379;sentinel://10.0.0.2:26380/2"


def test_parses_kombus_list_of_sentinels() -> None:
    assert parse_sentinel_url(TWO) == SentinelURL(
        hosts=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), db=2, password="s3cret"
    )
    assert parse_sentinel_url("sentinel://h").hosts == (("h", 26379),)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sentinel://h:1;redis://h:2", "sentinel 2: scheme 'redis'"),
        ("sentinel://h:1/x", "database 'x'"),
        ("sentinel://:99999999", "port"),
        ("sentinel://h:1/0?master_name=m", "no ?query"),
        ("sentinel://", "no host"),
    ],
)
def test_bad_sentinel_urls_name_the_part(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_sentinel_url(url)


def test_settings_need_the_master_name() -> None:
    with pytest.raises(ValidationError, match="EXECUTUS_SENTINEL_MASTER"):
        Settings(redis_url=TWO)
    with pytest.raises(ValidationError, match="EXECUTUS_BROKER_SENTINEL_MASTER"):
        Settings(broker_url=TWO)
    settings = Settings(redis_url=TWO, sentinel_master="mymaster")
    assert settings.effective_broker_sentinel_master == "mymaster"
    other = Settings(redis_url=TWO, sentinel_master="a", broker_sentinel_master="b")
    assert other.effective_broker_sentinel_master == "b"


def test_settings_reject_a_bad_sentinel_url() -> None:
    with pytest.raises(ValidationError, match="sentinel 1: no host"):
        Settings(redis_url="sentinel://", sentinel_master="m")


def test_redaction_covers_every_sentinel() -> None:
    shown = redact_url("sentinel://:a@h1:1;sentinel://:b@h2:2/0")
    assert shown == "sentinel://:***@h1:1;sentinel://:***@h2:2/0"


def test_the_client_asks_the_sentinels_for_the_named_master() -> None:
    client = connect(TWO, sentinel_master="mymaster", socket_timeout=3)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2
    assert pool.connection_kwargs["password"] == "s3cret"
    assert pool.connection_kwargs["socket_timeout"] == 3
    addresses = [(c.connection_pool.connection_kwargs["host"],
                  c.connection_pool.connection_kwargs["port"])
                 for c in pool.sentinel_manager.sentinels]  # fmt: skip
    assert addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    with pytest.raises(ValueError, match="EXECUTUS_SENTINEL_MASTER"):
        connect(TWO)


def test_plain_urls_are_plain_clients() -> None:
    client = connect("redis://127.0.0.1:1/3")
    assert type(client.connection_pool) is redis.ConnectionPool


def test_a_sentinel_broker_gets_the_hardened_sentinel_transport() -> None:
    config = _config(Settings(broker_url=TWO, broker_sentinel_master="q"))
    assert config["broker_transport"] == "executus_worker.worker.transport:SentinelTransport"
    assert config["broker_transport_options"]["master_name"] == "q"
    plain = _config(Settings())
    assert "master_name" not in plain["broker_transport_options"]
