"""The fault tools themselves: the Redis controller keeps data across restarts and rolls back;
the proxy passes, partitions (silence, not refusal) and resets."""

from __future__ import annotations

import socket
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .proxy import TcpProxy
from .redis_server import RedisServer

pytestmark = pytest.mark.faults


def test_redis_keeps_its_data_across_restarts_on_the_same_port(fault_redis: RedisServer) -> None:
    port, pid = fault_redis.port, fault_redis.pid
    with fault_redis.client() as client:
        client.set("k", "v1")
        time.sleep(1.2)  # appendfsync everysec: past one fsync, a crash keeps it
    fault_redis.restart(kill=True, down_s=0.1)
    assert fault_redis.port == port and fault_redis.pid != pid
    with fault_redis.client() as client:
        assert client.get("k") == b"v1"
        client.set("k", "v2")
    fault_redis.restart(kill=False, down_s=0.1)  # SHUTDOWN NOSAVE still flushes the AOF
    with fault_redis.client() as client:
        assert client.get("k") == b"v2"


def test_rollback_restores_the_snapshot_and_forgets_later_writes(fault_redis: RedisServer) -> None:
    with fault_redis.client() as client:
        client.set("epoch", 1)
    snapshot = fault_redis.snapshot()
    with fault_redis.client() as client:
        client.set("epoch", 2)
        client.set("later", "x")
    fault_redis.rollback(snapshot)
    with fault_redis.client() as client:
        assert client.get("epoch") == b"1"
        assert client.get("later") is None
        assert client.config_get("appendonly")["appendonly"] == "yes"


def _client(proxy: TcpProxy) -> redis.Redis:
    # No retries: each call shows what one attempt sees through the proxy.
    return redis.Redis(port=proxy.port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))


def test_the_proxy_passes_partitions_and_resets(fault_redis: RedisServer) -> None:
    with TcpProxy(fault_redis.port) as proxy:
        client = _client(proxy)
        assert client.ping()

        proxy.set_mode("drop")
        # A partition is silence: the command times out, nothing refuses or resets it.
        with pytest.raises(redis.TimeoutError):
            client.ping()
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
        raw.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            raw.recv(16)  # connected, but nothing comes back

        proxy.set_mode("pass")
        with pytest.raises(ConnectionResetError):
            raw.recv(16)  # a stream that lost bytes is not resumed
        raw.close()
        assert client.ping()  # a fresh connection works again

        proxy.set_mode("reset")
        with pytest.raises(redis.ConnectionError):
            client.ping()
        proxy.set_mode("pass")
        assert client.ping()
        client.close()


def test_the_proxy_relays_large_values_both_ways(fault_redis: RedisServer) -> None:
    value = bytes(range(256)) * 20_000  # 5 MB: past the per-direction buffer cap
    with TcpProxy(fault_redis.port) as proxy:
        client = redis.Redis(port=proxy.port, socket_timeout=10)
        client.set("big", value)
        assert client.get("big") == value
        client.close()


def test_the_proxy_stops_itself_after_its_lifetime(fault_redis: RedisServer) -> None:
    proxy = TcpProxy(fault_redis.port, lifetime_s=0.3).start()
    time.sleep(1.0)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5).recv(1)
    proxy.stop()


def test_the_proxy_refuses_connections_past_its_bound(fault_redis: RedisServer) -> None:
    with TcpProxy(fault_redis.port, max_connections=2) as proxy:
        clients = [_client(proxy) for _ in range(3)]
        assert clients[0].ping() and clients[1].ping()
        with pytest.raises(redis.ConnectionError):
            clients[2].ping()
        for client in clients:
            client.close()
