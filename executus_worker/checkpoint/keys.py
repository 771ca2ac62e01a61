"""Every Redis key the store uses, in one place (the way arq keeps ``arq/constants.py``).

Two layouts, chosen by ``KeySchema.shards`` (``EXECUTUS_REDIS_SHARDS``). Every script touches
the keys of one run plus the indexes that run is in, and in both layouts those share one Redis
Cluster slot, so no script ever crosses slots.

**shards = 0** (plain Redis and Sentinel; the default there, and the names every earlier
version wrote). Per-run keys share the hash tag ``{run:<id>}``; the indexes are global::

    <prefix>:{run:<id>}:rec     hash    the run record (status, request JSON, epoch, ...)
    <prefix>:{run:<id>}:lease   string  "<owner>:<epoch>", PX TTL = lease_ttl_s
    <prefix>:{run:<id>}:ckpt    hash    checkpoint meta (format version, iteration, phases, ...)
    <prefix>:{run:<id>}:msgs    string  the transcript as one JSON array, '[m1\\n,m2]' (codec.py)
    <prefix>:{run:<id>}:events  stream  the run's audit events, XADD MAXLEN ~ (events.py)
    <prefix>:{run:<id>}:spend   hash    tokens and cost across all attempts (spend.py)
    <prefix>:runs:active        zset    non-terminal run ids, score = created_at
    <prefix>:runs:done          zset    finished run ids, score = finished_at, trimmed to retention
    <prefix>:runs:due           zset    running and interrupted run ids, score = when the run
                                        becomes a recovery candidate: its lease deadline (pushed
                                        forward by every renewal), or the interrupt time
    <prefix>:runs:waiting       zset    queued run ids, score = base such that the run is a
                                        candidate once base <= now - queued_timeout_s (the base
                                        carries its re-publish backoff)
    <prefix>:runs:audit         string  where the index audit resumes in runs:active (a rank)
    <prefix>:spend:{guild:<g>}:<yyyy-mm-dd>  hash  a guild's tokens and cost that UTC day
    <prefix>:layout             string  the layout the data was written with ("shards=N")

**shards = N > 0** (Redis Cluster; 64 by default there). The indexes are split into N
*partitions*; a run belongs to partition ``crc16(run_id) % N`` (CRC-16/XMODEM of the UTF-8 id,
the checksum Redis Cluster itself uses) and its keys carry its partition's tag, so its record,
lease, checkpoint and stream sit in one slot with the indexes of its partition::

    <prefix>:{<tag k>}:run:<id>:rec|lease|ckpt|msgs|events|spend
    <prefix>:{<tag k>}:runs:active|done|due|waiting|audit

``<tag k>`` is ``<prefix>:s<k>`` plus, where needed, a suffix ``.<n>`` (the smallest n >= 1) that
puts partition k's slot in the k-th of N equal slot ranges: a cluster whose masters own equal
contiguous slot ranges (what ``redis-cli --cluster create`` makes) gets an equal share of
partitions on every master. The tags are a pure function of (prefix, N), computed once per
process. N is fixed for a deployment: the ``layout`` key records it and a process whose setting
differs refuses to start (``check_layout``).

The events and spend keys carry a TTL refreshed on every write, like every other per-run key of
a finished run; a guild's daily counter expires two days after its day began.

Every non-terminal run is in its partition's ``runs:active`` and in exactly one of
``runs:due`` / ``runs:waiting``, so a sweep reads only the runs that are due
(``redis_index.py``). The index keys and the layout key have no TTL by design (they are
bounded: active, due and waiting by live runs, done by the retention window); every per-run key
of a finished run carries a TTL.
"""

from __future__ import annotations

import binascii
import functools
from dataclasses import dataclass

CLUSTER_SLOTS = 16_384
# Partitions on Redis Cluster unless EXECUTUS_REDIS_SHARDS says otherwise: enough that every
# master of a cluster up to a few dozen masters holds some, few enough that a sweep's index
# reads (two short commands per partition, one round trip per master) stay cheap.
DEFAULT_CLUSTER_SHARDS = 64
MAX_SHARDS = 1024
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class IndexKeys:
    """One partition's indexes (the only partition when shards is 0)."""

    active: str
    done: str
    due: str
    waiting: str
    audit: str

    def all(self) -> tuple[str, ...]:
        return (self.active, self.done, self.due, self.waiting, self.audit)


@dataclass(frozen=True)
class RunKeys:
    """The four per-run keys plus the indexes, in the order the Lua scripts expect."""

    rec: str
    lease: str
    ckpt: str
    msgs: str
    active: str
    done: str
    due: str
    waiting: str

    def all(self) -> list[str]:
        return [
            self.rec, self.lease, self.ckpt, self.msgs,
            self.active, self.done, self.due, self.waiting,
        ]  # fmt: skip


def shard_of(run_id: str, shards: int) -> int:
    """The partition of a run: CRC-16/XMODEM of its UTF-8 id (what Redis Cluster hashes keys
    with), modulo the partition count."""
    return binascii.crc_hqx(run_id.encode(), 0) % shards


def key_slot(tag: str) -> int:
    """The Redis Cluster slot of a key whose hash tag is ``tag``."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


@functools.cache
def _tags(prefix: str, shards: int) -> tuple[str, ...]:
    tags = []
    for k in range(shards):
        low, high = k * CLUSTER_SLOTS // shards, (k + 1) * CLUSTER_SLOTS // shards
        tag, n = f"{prefix}:s{k}", 0
        while not low <= key_slot(tag) < high:
            n += 1
            tag = f"{prefix}:s{k}.{n}"
        tags.append(tag)
    return tuple(tags)


@dataclass(frozen=True)
class KeySchema:
    prefix: str = "executus"
    shards: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 0..{MAX_SHARDS}, not {self.shards}")

    # -- the layout ------------------------------------------------------------------

    @property
    def layout(self) -> str:
        """The key recording which layout this prefix's data was written with."""
        return f"{self.prefix}:layout"

    @property
    def layout_value(self) -> str:
        return f"v{LAYOUT_VERSION} shards={self.shards}"

    # -- indexes ---------------------------------------------------------------------

    def partitions(self) -> tuple[IndexKeys, ...]:
        """Every partition's index keys, in partition order (one when shards is 0)."""
        if not self.shards:
            return (self._global(),)
        return tuple(self._partition_keys(tag) for tag in _tags(self.prefix, self.shards))

    def partition(self, run_id: str) -> IndexKeys:
        """The index keys of the partition ``run_id`` belongs to."""
        if not self.shards:
            return self._global()
        return self._partition_keys(self._tag(run_id))

    def _global(self) -> IndexKeys:
        base = f"{self.prefix}:runs"
        return IndexKeys(
            f"{base}:active", f"{base}:done", f"{base}:due", f"{base}:waiting", f"{base}:audit"
        )

    def _partition_keys(self, tag: str) -> IndexKeys:
        base = f"{self.prefix}:{{{tag}}}:runs"
        return IndexKeys(
            f"{base}:active", f"{base}:done", f"{base}:due", f"{base}:waiting", f"{base}:audit"
        )

    def _tag(self, run_id: str) -> str:
        return _tags(self.prefix, self.shards)[shard_of(run_id, self.shards)]

    def _unsharded(self, name: str) -> str:
        if self.shards:
            raise ValueError(
                f"{self.prefix} is split into {self.shards} partitions: there is no global "
                f"runs:{name}; use partitions() or partition(run_id)"
            )
        return f"{self.prefix}:runs:{name}"

    # The global indexes of the unsharded layout (tests, benchmarks, single-Redis tools).
    @property
    def active(self) -> str:
        return self._unsharded("active")

    @property
    def done(self) -> str:
        return self._unsharded("done")

    @property
    def due(self) -> str:
        return self._unsharded("due")

    @property
    def waiting(self) -> str:
        return self._unsharded("waiting")

    @property
    def audit(self) -> str:
        return self._unsharded("audit")

    @property
    def indexes(self) -> tuple[str, ...]:
        """Every key without a TTL by design: all partitions' indexes and the layout key."""
        return (*(key for p in self.partitions() for key in p.all()), self.layout)

    # -- per run ---------------------------------------------------------------------

    def run_base(self, run_id: str) -> str:
        if not self.shards:
            return f"{self.prefix}:{{run:{run_id}}}"
        return f"{self.prefix}:{{{self._tag(run_id)}}}:run:{run_id}"

    def rec(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:rec"

    def msgs(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:msgs"

    def ckpt(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:ckpt"

    def lease(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:lease"

    def events(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:events"

    def spend(self, run_id: str) -> str:
        return f"{self.run_base(run_id)}:spend"

    def guild_spend(self, guild_id: str, day: str) -> str:
        return f"{self.prefix}:spend:{{guild:{guild_id}}}:{day}"

    def run(self, run_id: str) -> RunKeys:
        if not self.shards:
            base = f"{self.prefix}:{{run:{run_id}}}"
            idx = f"{self.prefix}:runs"
            return RunKeys(
                rec=f"{base}:rec",
                lease=f"{base}:lease",
                ckpt=f"{base}:ckpt",
                msgs=f"{base}:msgs",
                active=f"{idx}:active",
                done=f"{idx}:done",
                due=f"{idx}:due",
                waiting=f"{idx}:waiting",
            )
        tag = self._tag(run_id)
        base = f"{self.prefix}:{{{tag}}}:run:{run_id}"
        idx = f"{self.prefix}:{{{tag}}}:runs"
        return RunKeys(
            rec=f"{base}:rec",
            lease=f"{base}:lease",
            ckpt=f"{base}:ckpt",
            msgs=f"{base}:msgs",
            active=f"{idx}:active",
            done=f"{idx}:done",
            due=f"{idx}:due",
            waiting=f"{idx}:waiting",
        )
