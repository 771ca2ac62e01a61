"""Checkpoint stores (memory, Redis), the Redis key schema, the codec and the per-run handle.

Re-exports only; importing this package opens no connection.
"""

from executus_worker.checkpoint.handle import RunHandle, StoreCheckpointerFactory
from executus_worker.checkpoint.keys import KeySchema, RunKeys
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import (
    ClaimResult,
    ClaimStatus,
    RenewStatus,
    Requeued,
    RunStore,
    SweepBatch,
)

__all__ = [
    "ClaimResult",
    "ClaimStatus",
    "KeySchema",
    "MemoryStore",
    "RedisStore",
    "RenewStatus",
    "Requeued",
    "RunHandle",
    "RunKeys",
    "RunStore",
    "StoreCheckpointerFactory",
    "SweepBatch",
]
