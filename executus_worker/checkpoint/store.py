"""The store contract: run records, leases, the active index and checkpoints, behind one port.

Two implementations keep the same guarantees: ``MemoryStore`` (product code: tests, the demo
and users' own tests use it) and ``RedisStore`` (atomic Lua scripts; keys in ``keys.py``).
The conformance spec in ``tests/checkpoint/conformance.py`` runs against both, and against
fakeredis and a real Redis.

Run lifecycle (every arrow is one atomic compare-and-set):

    register ──► queued ──claim──► running ──interrupt──► interrupted ──requeue──► queued
                   │                  │  └─ lease expires (crash) ──requeue──► queued
                   │                  └──finish──► completed | failed | cancelled
                   └─cancel─► cancelled           claim past max attempts ──► dead
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.models import Checkpoint, Message, RunRecord, RunRequest, RunStatus
from executus_worker.errors import StoreError


class ClaimStatus(enum.StrEnum):
    CLAIMED = "claimed"  # this attempt owns the run; epoch is the new fencing token
    BUSY = "busy"  # another owner's lease is live: this delivery is a duplicate
    GONE = "gone"  # terminal or unknown: nothing to do (late duplicate)
    CANCELLED = "cancelled"  # cancel was requested before start: now terminal
    DEAD = "dead"  # attempts exceeded max_recovery_attempts: now terminal


@dataclass(frozen=True)
class Fence:
    """What one claim writes with. ``token`` is random per claim and is what every fenced write
    compares; ``epoch`` (1, 2, 3, ... per claim) is for people and may repeat after Redis loses
    writes, the token never does."""

    token: str
    epoch: int

    @classmethod
    def new(cls, epoch: int = 0) -> Fence:
        # 64 random bits: two claims colliding would need ~4e9 claims of one run.
        return cls(secrets.token_hex(8), epoch)


@dataclass(frozen=True)
class ClaimResult:
    status: ClaimStatus
    epoch: int = 0
    attempts: int = 0
    record: RunRecord | None = None
    fence: Fence | None = None  # set when status is CLAIMED


@dataclass(frozen=True)
class RunningLease:
    run_id: str
    owner: str
    fence_token: str


@dataclass(frozen=True)
class SaveAck:
    """The reply to a checkpoint save: the stored transcript length and whether a cancel was
    requested (it rides on the save's reply, so a cancel lands at the next step boundary)."""

    stored: int
    cancel_requested: bool = False


class RenewStatus(enum.StrEnum):
    OK = "ok"
    LOST = "lost"  # the lease now belongs to a newer epoch, or the run ended
    CANCEL = "cancel"  # still ours, but a cancel was requested


@dataclass(frozen=True)
class Requeued:
    """A run the sweep moved back to ``queued``; the caller must publish its message."""

    run_id: str
    queue: str
    request: RunRequest
    previous_status: RunStatus


@dataclass(frozen=True)
class SweepBatch:
    requeued: list[Requeued]
    errors: list[tuple[str, str]]  # (run_id, what was wrong) for records that were skipped
    scanned: int
    cursor: int  # 0 when the index was walked to the end


class RunStore(Protocol):
    # -- records -----------------------------------------------------------------------
    def register(
        self, request: RunRequest, *, run_id: str, queue: str, now: float
    ) -> tuple[RunRecord, bool]:
        """Create the record (status queued) and index it; idempotent on run_id.

        Returns (record, created). An existing run is returned unchanged with created=False.
        """
        ...

    def get(self, run_id: str) -> RunRecord | None: ...

    def claim(
        self, run_id: str, *, owner: str, lease_ttl_s: float, max_attempts: int, now: float
    ) -> ClaimResult:
        """queued/interrupted/running-with-expired-lease -> running, epoch+1, attempts+1, and a
        new random fence (``ClaimResult.fence``) that every write of this attempt carries."""
        ...

    def renew(self, run_id: str, *, fence: Fence, lease_ttl_s: float) -> RenewStatus: ...

    def renew_many(
        self, leases: Sequence[tuple[str, Fence]], *, lease_ttl_s: float
    ) -> list[RenewStatus | StoreError]:
        """Renew every lease a process holds in one round trip; a per-lease error is returned
        in its slot, a failure of the round trip itself raises StoreError."""
        ...

    def running_leases(
        self, *, cursor: int = 0, batch: int = 1000
    ) -> tuple[list[RunningLease], int]:
        """One page of the running runs: (run id, owner, fence token); cursor 0 at the end."""
        ...

    def release_lease(self, run_id: str, *, fence_token: str) -> bool:
        """Drop the lease of claim ``fence_token`` if it is still the run's current claim (its
        owner is provably dead): the run is recoverable at once. True if dropped."""
        ...

    def refund(self, run_id: str, *, fence: Fence) -> bool:
        """The owner of ``fence`` was replaced but its process survived: if the takeover was
        booked as a crash, undo that (it must not count toward ``dead``). True if undone."""
        ...

    def request_cancel(self, run_id: str, *, now: float) -> RunRecord:
        """A queued or interrupted run becomes cancelled at once; a running one gets the flag."""
        ...

    def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]: ...

    def sweep(
        self, *, now: float, queued_timeout_s: float, cursor: int = 0, batch: int = 1000
    ) -> SweepBatch:
        """Walk the active index from ``cursor``; CAS every orphan back to queued."""
        ...

    # -- checkpoints -------------------------------------------------------------------
    def load_checkpoint(self, run_id: str) -> Checkpoint | None:
        """Raises CorruptCheckpointError / UnsupportedFormatError naming the run."""
        ...

    def save_checkpoint(
        self,
        run_id: str,
        *,
        fence: Fence,
        base_len: int,
        new_messages: Sequence[Message],
        checkpoint: Checkpoint,
        now: float,
        expect_seq: str = "",
        seq: str = "",
        meta: Mapping[str, str] | None = None,
    ) -> SaveAck:
        """Keep the first ``base_len`` stored messages, append ``new_messages``, update meta.

        Atomic and fenced: raises OwnershipLost if the run is not held by ``fence``, and
        TranscriptBehind if fewer than ``base_len`` messages are stored or (``expect_seq``
        non-empty) the last stored write is not ``expect_seq``: Redis lost writes. ``seq`` is
        stored as the new last-write marker. ``meta``: only these meta fields are written
        (the writer's delta); None writes all of them from ``checkpoint``.
        Its cost depends on the new messages only, never on the transcript length.
        """
        ...

    def finish(
        self,
        run_id: str,
        *,
        fence: Fence,
        status: RunStatus,
        output: JsonValue,
        error: str | None,
        base_len: int,
        new_messages: Sequence[Message],
        now: float,
        result_ttl_s: int,
        expect_seq: str = "",
    ) -> None:
        """Terminal transition: record the result and final transcript with a TTL, delete the
        checkpoint and lease, drop the run from the active index. Fenced like a save."""
        ...

    def interrupt(
        self, run_id: str, *, fence: Fence, now: float, reason: str | None = None
    ) -> None:
        """running -> interrupted, lease released, checkpoint kept. Fenced like a save."""
        ...

    def transcript(self, run_id: str) -> list[Message]:
        """The live checkpoint's transcript, or the retained final one."""
        ...
