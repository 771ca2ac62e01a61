"""The agent directory: which live worker serves which agents, on which queues.

Every worker's MainProcess advertises itself -- its name, the agents its registry knows, the
queues it consumes -- in a key with a TTL that it refreshes while it lives (``worker``
package, ``advertise``). A worker that dies or stops simply ages out; one that shuts down warm
is not removed at once either, so a rolling restart does not make enqueues fail for the
seconds no worker is up. Producers read the directory to refuse a run no worker would ever
execute (``Client.submit``), and ``executus-worker agents`` lists it.

Keys (one Redis Cluster slot, so the read is one MGET)::

    <prefix>:{workers}:w:<worker name>   string  the advertisement (JSON), PX = ttl
    <prefix>:{workers}:index             zset    worker name -> last advertised (unix time)

The index only lists candidates: a worker counts as live while its own key exists (Redis
expires it; no clock is compared across hosts). Entries older than many TTLs are pruned from
the index whenever a worker advertises.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from executus_worker.errors import UnknownAgentError
from executus_worker.redis_connect import StateClient

_PRUNE_AFTER_TTLS = 10


@dataclass(frozen=True)
class WorkerAd:
    """One worker's advertisement."""

    worker: str  # Celery's node name, e.g. "celery@host-1"
    agents: tuple[str, ...]
    queues: tuple[str, ...]
    pid: int = 0
    started_at: float = 0.0
    seen_at: float = 0.0  # the worker's clock, when it last advertised
    error: str | None = None  # its agents file could not be loaded: it serves only the rest

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerAd | None:
        try:
            data: Any = json.loads(raw)
            return cls(
                worker=str(data["worker"]),
                agents=tuple(str(a) for a in data.get("agents", ())),
                queues=tuple(str(q) for q in data.get("queues", ())),
                pid=int(data.get("pid", 0)),
                started_at=float(data.get("started_at", 0.0)),
                seen_at=float(data.get("seen_at", 0.0)),
                error=None if data.get("error") is None else str(data["error"]),
            )
        except (ValueError, TypeError, KeyError):
            return None  # a foreign or newer entry: not a worker we can vouch for


@dataclass(frozen=True)
class Directory:
    """A snapshot of the live workers."""

    workers: tuple[WorkerAd, ...] = ()
    read_at: float = field(default=0.0)

    def agents(self) -> dict[str, list[WorkerAd]]:
        """Agent name -> the workers serving it (sorted by name)."""
        out: dict[str, list[WorkerAd]] = {}
        for ad in self.workers:
            for agent in ad.agents:
                out.setdefault(agent, []).append(ad)
        return {name: sorted(out[name], key=lambda ad: ad.worker) for name in sorted(out)}

    def serving(self, agent: str, queue: str | None = None) -> list[WorkerAd]:
        """Live workers serving ``agent`` (on ``queue``, when given)."""
        return [
            ad for ad in self.workers
            if agent in ad.agents and (queue is None or queue in ad.queues)
        ]  # fmt: skip

    def require(self, agent: str, queue: str) -> None:
        """UnknownAgentError, saying what is live instead, unless a worker on ``queue`` serves
        ``agent``."""
        if self.serving(agent, queue):
            return
        override = (
            "pass allow_unknown_agent=True (CLI: --allow-unknown-agent) to queue it anyway, "
            "e.g. while its workers are being deployed"
        )
        elsewhere = sorted({q for ad in self.serving(agent) for q in ad.queues})
        if elsewhere:
            raise UnknownAgentError(
                f"agent {agent!r} is served only on queue(s) {', '.join(elsewhere)}, but this "
                f"run goes to queue {queue!r} (its model_tier picks the queue); {override}"
            )
        if not self.workers:
            raise UnknownAgentError(
                f"no live worker serves agent {agent!r}: no worker has advertised itself "
                f"(is any running, on this Redis and key prefix?); {override}"
            )
        known = ", ".join(self.agents()) or "none"
        raise UnknownAgentError(
            f"no live worker serves agent {agent!r}; the live workers serve: {known}; {override}"
        )


class AgentDirectory:
    def __init__(self, client: StateClient, *, key_prefix: str, ttl_s: float = 60.0) -> None:
        self._redis = client
        self._base = f"{key_prefix}:{{workers}}"
        self.ttl_s = ttl_s

    @property
    def index_key(self) -> str:
        return f"{self._base}:index"

    def worker_key(self, worker: str) -> str:
        return f"{self._base}:w:{worker}"

    def advertise(self, ad: WorkerAd) -> None:
        ttl_ms = max(1, int(self.ttl_s * 1000))
        now = ad.seen_at or time.time()
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self.worker_key(ad.worker), ad.to_json(), px=ttl_ms)
        pipe.zadd(self.index_key, {ad.worker: now})
        pipe.zremrangebyscore(self.index_key, "-inf", now - _PRUNE_AFTER_TTLS * self.ttl_s)
        # The index outlives every worker key, and then goes too: no key without a TTL.
        pipe.pexpire(self.index_key, ttl_ms * _PRUNE_AFTER_TTLS)
        pipe.execute()

    def read(self) -> Directory:
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in self._redis.zrange(self.index_key, 0, -1)]  # fmt: skip
        ads = self._load(names)
        return Directory(workers=tuple(sorted(ads, key=lambda ad: ad.worker)), read_at=time.time())

    def _load(self, names: Sequence[str]) -> Iterable[WorkerAd]:
        if not names:
            return []
        raws = self._redis.mget([self.worker_key(n) for n in names])
        found = (WorkerAd.from_json(raw) for raw in raws if raw is not None)
        return [ad for ad in found if ad is not None]
