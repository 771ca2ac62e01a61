"""The three backends the conformance spec runs on, behind one small test-only interface.

Each backend knows how to do what a test cannot do through the RunStore port: expire a lease
(as a crash would), damage stored bytes, and list keys left without a TTL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from redis.cluster import RedisCluster

from executus_worker.checkpoint.codec import SEPARATOR
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import RunStore
from executus_worker.embedded_cluster import LocalCluster
from executus_worker.redis_connect import StateClient


class FakeClock:
    """Satisfies both ``Callable[[], float]`` (MemoryStore) and ``core.ports.Clock``."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Backend:
    name: str
    store: RunStore

    def expire_lease(self, run_id: str) -> None:
        raise NotImplementedError

    def set_record_field(self, run_id: str, field: str, value: str) -> None:
        raise NotImplementedError

    def set_meta_field(self, run_id: str, field: str, value: str) -> None:
        raise NotImplementedError

    def set_message(self, run_id: str, index: int, raw: str) -> None:
        raise NotImplementedError

    def index_as_active(self, run_id: str, score: float) -> None:
        raise NotImplementedError

    def drop_from_recovery_index(self, run_id: str) -> None:
        """Lose the run's recovery-index entry (as data written by an older version has none)."""
        raise NotImplementedError

    def stored_len(self, run_id: str) -> int:
        raise NotImplementedError

    def keys_without_ttl(self) -> list[str] | None:
        """Per-run keys with no TTL, or None where TTLs are not keys (memory)."""
        return None


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.mem = MemoryStore(clock=self.clock)
        self.store = self.mem

    def expire_lease(self, run_id: str) -> None:
        self.mem._runs[run_id].lease = None

    def set_record_field(self, run_id: str, field: str, value: str) -> None:
        self.mem._runs[run_id].rec[field] = value

    def set_meta_field(self, run_id: str, field: str, value: str) -> None:
        ckpt = self.mem._runs[run_id].ckpt
        assert ckpt is not None
        ckpt[field] = value

    def set_message(self, run_id: str, index: int, raw: str) -> None:
        self.mem._runs[run_id].msgs[index] = raw

    def index_as_active(self, run_id: str, score: float) -> None:
        self.mem._active[run_id] = score

    def drop_from_recovery_index(self, run_id: str) -> None:
        self.mem._due.pop(run_id, None)
        self.mem._waiting.pop(run_id, None)

    def stored_len(self, run_id: str) -> int:
        return len(self.mem._runs[run_id].msgs)


class RedisBackend(Backend):
    """``shards``: None for the store's default (0 on one Redis, partitions on a cluster)."""

    def __init__(self, name: str, client: StateClient, *, shards: int | None = None) -> None:
        self.name = name
        self.client = client
        self.redis_store = RedisStore(client, key_prefix="t", shards=shards)
        self.store = self.redis_store
        self.keys = self.redis_store.keys

    def expire_lease(self, run_id: str) -> None:
        self.client.delete(self.keys.lease(run_id))

    def set_record_field(self, run_id: str, field: str, value: str) -> None:
        self.client.hset(self.keys.rec(run_id), field, value)

    def set_meta_field(self, run_id: str, field: str, value: str) -> None:
        self.client.hset(self.keys.ckpt(run_id), field, value)

    def _items(self, run_id: str) -> list[str]:
        raw = self.client.get(self.keys.msgs(run_id))
        return raw.decode()[1:-1].split(SEPARATOR) if raw else []

    def set_message(self, run_id: str, index: int, raw: str) -> None:
        items = self._items(run_id)
        items[index] = raw
        self.client.set(self.keys.msgs(run_id), "[" + SEPARATOR.join(items) + "]")

    def index_as_active(self, run_id: str, score: float) -> None:
        self.client.zadd(self.keys.partition(run_id).active, {run_id: score})

    def drop_from_recovery_index(self, run_id: str) -> None:
        self.client.zrem(self.keys.partition(run_id).due, run_id)
        self.client.zrem(self.keys.partition(run_id).waiting, run_id)

    def stored_len(self, run_id: str) -> int:
        return len(self._items(run_id))

    def keys_without_ttl(self) -> list[str] | None:
        indexes = set(self.keys.indexes)
        found = []
        for raw in self.client.scan_iter(count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            if key not in indexes and self.client.ttl(key) == -1:
                found.append(key)
        return found


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A cluster client on the session's cluster, every master flushed before each test."""
    redis_cluster.flush()
    client = redis_cluster.client()
    yield client
    client.close()


@pytest.fixture(
    params=[
        "memory",
        "fakeredis",
        # The partitioned layout of Redis Cluster, on one server: the same keys and scripts.
        "fakeredis-sharded",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
    elif request.param.startswith("fakeredis"):
        client: Any = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        shards = 4 if request.param.endswith("sharded") else None
        yield RedisBackend(request.param, client, shards=shards)
        client.close()
    elif request.param == "cluster":
        yield RedisBackend("cluster", request.getfixturevalue("cluster_client"))
    else:
        yield RedisBackend("redis", request.getfixturevalue("redis_client"))


@pytest.fixture
def store(backend: Backend) -> RunStore:
    return backend.store
