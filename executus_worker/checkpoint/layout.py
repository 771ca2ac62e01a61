"""Which key layout a prefix's run state was written with, and refusing to mix two.

The index partition count (``KeySchema.shards``, ``EXECUTUS_REDIS_SHARDS``) decides every
run's key names. A process that used another count than the data was written with would not
see those runs (the sweep would never recover them) and would write a second, disjoint set of
indexes. So the first process to start records the layout in ``<prefix>:layout``; every later
one compares and refuses to start on a mismatch, naming the setting.
"""

from __future__ import annotations

import redis

from executus_worker.checkpoint import codec
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.errors import ConfigError, StoreError
from executus_worker.redis_connect import StateClient

SETTING = "EXECUTUS_REDIS_SHARDS"


def check_layout(client: StateClient, keys: KeySchema, *, record: bool = True) -> None:
    """Record ``keys``' layout if none is recorded (unless not ``record``: clients only
    compare, workers and beat record); ``ConfigError`` if another one is recorded."""
    want = keys.layout_value
    try:
        raw = client.get(keys.layout)
        if raw is None and record:
            _refuse_unrecorded_legacy(client, keys)
            client.set(keys.layout, want, nx=True)
            raw = client.get(keys.layout)  # another process may have won the race
    except redis.RedisError as exc:
        raise StoreError(f"reading the key layout at {keys.layout} failed: {exc}") from exc
    got = codec.text(raw) if raw is not None else want
    if got != want:
        raise ConfigError(
            f"the run state under key prefix {keys.prefix!r} was written with layout {got!r} "
            f"({keys.layout}), but this process is set for {want!r}: set {SETTING} to the "
            "recorded partition count (it is fixed for a deployment; changing it means "
            "draining every run first, ops/README.md)"
        )


def _refuse_unrecorded_legacy(client: StateClient, keys: KeySchema) -> None:
    """Data from before the layout key existed is in the unpartitioned layout: a partitioned
    process must not start on it (its runs would be invisible to it)."""
    if not keys.shards:
        return
    legacy = KeySchema(keys.prefix)
    if int(client.zcard(legacy.active)):
        raise ConfigError(
            f"key prefix {keys.prefix!r} holds runs in the unpartitioned layout "
            f"({legacy.active}), but this process is set for {keys.shards} partitions: "
            f"set {SETTING}=0, or drain those runs first (ops/README.md)"
        )
