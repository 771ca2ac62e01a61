"""The store contract: run records, leases, the active index and checkpoints, behind one port.

Two implementations keep the same guarantees: ``MemoryStore`` (product code: tests, the demo
and users' own tests use it) and ``RedisStore`` (atomic Lua scripts; keys in ``keys.py``).
The conformance spec in ``tests/checkpoint/conformance.py`` runs against both, and against
fakeredis and a real Redis.

Run lifecycle (every arrow is one atomic compare-and-set):

    register ──► queued ──claim──► running ──interrupt──► interrupted ──requeue──► queued
                   │                  │  └─ lease expires (crash) ──requeue──► queued
                   │                  ├──finish──► completed | failed | cancelled
                   │                  └──park──► interrupted (needs_format: only a worker
                   │                             that reads it claims the run again)
                   └─cancel─► cancelled           claim past max attempts ──► dead

The recovery index. Every non-terminal run is a *candidate* for the sweep at a known time, kept
up to date by the transitions themselves, so a sweep reads only the runs that are due and never
the healthy ones:

    status        candidate when                              set by
    running       its lease deadline has passed               claim, every renewal
    interrupted   at once                                     interrupt, park
    queued        now - base >= queued_timeout_s              register, requeue

A due candidate gets the per-run compare-and-set (``sweep``), which decides from the record and
the lease, never from the index: a live lease is only rescheduled to its expiry; an interrupted
run, or a running one whose lease is gone, goes back to ``queued`` and must be re-published.

A queued run that nobody claimed may just be waiting in a backlog, so it is re-published only
when its message is plausibly lost, with backoff. The k-th check since the run was last claimed
comes ``queued_timeout_s * 2**min(k-1, QUEUED_BACKOFF_DOUBLINGS)`` after the previous one (so at
T, 3T, 7T, 15T, ... after it was enqueued, then every 32 T). At a check:

    its broker queue (LLEN, asked once per sweep)  last published         outcome
    empty, or unknown                              any time ago            re-published
    non-empty (a backlog it may be waiting in)     < BACKLOG_DEFER_LIMIT T deferred, not published
    non-empty                                      >= BACKLOG_DEFER_LIMIT T re-published

A backlog thus postpones a re-publish, never by more than ``BACKLOG_DEFER_LIMIT`` queued
timeouts, so a message lost while the queue never drains is still replaced; and however long a
backlog lasts, each run gets a logarithmic number of duplicates, not one per timeout.

A checkpoint an attempt could not read is never deleted by that attempt: a newer worker's
checkpoint is parked for a worker that reads it (a claim by an older worker is DEFERRED and
writes nothing, so the run stays queued under the backoff above), anything else unreadable
fails the run with the checkpoint kept as stored (``finish(keep_checkpoint=True)``).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import JsonValue

from executus_worker.checkpoint.settle import Settle
from executus_worker.core.models import Checkpoint, Message, RunRecord, RunRequest, RunStatus
from executus_worker.errors import StoreError

# The queued-run backoff and backlog rule (module docstring); the Lua REQUEUE uses the same.
QUEUED_BACKOFF_DOUBLINGS = 5
BACKLOG_DEFER_LIMIT = 4  # in queued timeouts since the run's message was last published


class ClaimStatus(enum.StrEnum):
    CLAIMED = "claimed"  # this attempt owns the run; epoch is the new fencing token
    BUSY = "busy"  # another owner's lease is live: this delivery is a duplicate
    GONE = "gone"  # terminal or unknown: nothing to do (late duplicate)
    CANCELLED = "cancelled"  # cancel was requested before start: now terminal
    DEAD = "dead"  # attempts exceeded max_recovery_attempts: now terminal
    # The run's checkpoint needs a newer worker (record.needs_format): nothing was written.
    DEFERRED = "deferred"


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
    # Set when the claimed record does not decode (so ``record`` is None): the claim holds the
    # run, which cannot be executed; the claimer must end it with this reason.
    problem: str | None = None


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
    """A run the sweep moved back to ``queued``; the caller must publish its message.

    ``request_json`` is the stored request exactly as registered, not parsed: the sweep never
    pays for decoding requests, and the worker that receives the message validates it (a
    request it cannot read ends the run ``failed`` with the reason, instead of leaving it
    stuck in recovery)."""

    run_id: str
    queue: str
    request_json: str
    previous_status: RunStatus


@dataclass(frozen=True)
class SweepBatch:
    requeued: list[Requeued]
    errors: list[tuple[str, str]]  # (run_id, what was wrong) for records that were skipped
    scanned: int  # due candidates looked at (never the healthy, not-yet-due runs)
    deferred: int = 0  # queued runs not re-published because their queue has a backlog
    more: bool = False  # the batch was full: call again (with the same ``now``) for the rest


@dataclass(frozen=True)
class IndexAudit:
    checked: int  # active runs whose recovery-index entry was checked
    added: int  # of those, runs that had none and were indexed as due now


class RunStore(Protocol):
    # -- records -----------------------------------------------------------------------
    def register(
        self,
        request: RunRequest,
        *,
        run_id: str,
        queue: str,
        now: float,
        rejected: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Create the record (status queued) and index it; idempotent on run_id.

        Returns (record, created). An existing run is returned unchanged with created=False.
        ``rejected``: the run is registered only to record why its first message could not be
        accepted; its ``request_error`` says so and no claim ever executes it.
        """
        ...

    def get(self, run_id: str) -> RunRecord | None: ...

    def claim(
        self, run_id: str, *, owner: str, lease_ttl_s: float, max_attempts: int, now: float
    ) -> ClaimResult:
        """queued/interrupted/running-with-expired-lease -> running, epoch+1, attempts+1, and a
        new random fence (``ClaimResult.fence``) that every write of this attempt carries.

        DEFERRED, writing nothing, when the run was parked for a checkpoint format newer than
        this code reads (``CHECKPOINT_FORMAT_VERSION``)."""
        ...

    def renew(
        self, run_id: str, *, fence: Fence, lease_ttl_s: float, now: float | None = None
    ) -> RenewStatus: ...

    def renew_many(
        self,
        leases: Sequence[tuple[str, Fence]],
        *,
        lease_ttl_s: float,
        now: float | None = None,
    ) -> list[RenewStatus | StoreError]:
        """Renew every lease a process holds in one round trip; a per-lease error is returned
        in its slot, a failure of the round trip itself raises StoreError. Also moves each
        run's recovery candidacy to ``now + lease_ttl_s`` (``now``: wall clock, default
        ``time.time()``), so the sweep never looks at a run whose owner keeps renewing."""
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
        self,
        *,
        now: float,
        queued_timeout_s: float,
        batch: int = 1000,
        backlogged: Callable[[str], bool] | None = None,
    ) -> SweepBatch:
        """Up to ``batch`` due running/interrupted runs and ``batch`` due queued runs (see the
        recovery index above); CAS each one: orphans go back to ``queued`` and are returned
        for publishing, live leases are rescheduled, queued runs follow the backoff and
        backlog rule (``backlogged(queue)``: does that broker queue hold messages; None:
        never). Every run it looks at leaves the due range, so calling again with the same
        ``now`` while ``more`` is set visits each due run once. Where the indexes are split
        into partitions (Redis Cluster, ``keys.py``) the batch is shared evenly among them and
        runs come in due order within each partition."""
        ...

    def audit_index(self, *, now: float, limit: int = 500) -> IndexAudit:
        """Index upkeep, constant cost: check the next ``limit`` active runs (round robin)
        each have a recovery-index entry, and index any that lack one as due ``now``. If the
        indexes hold fewer entries than there are active runs (data written by an older
        version, or an index entry lost), keep going until every active run was checked."""
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
        keep_checkpoint: bool = False,
        settle: Settle | None = None,
    ) -> None:
        """Terminal transition: record the result and final transcript with a TTL, delete the
        checkpoint and lease, drop the run from the active index. Fenced like a save.

        ``keep_checkpoint``: the attempt never read the stored checkpoint (it is unreadable, or
        the attempt ended before loading it), so it writes no transcript and deletes nothing:
        the checkpoint and transcript stay exactly as stored, expiring with the record.

        ``settle``: the broker message of this attempt, when the broker is this store's Redis:
        its unacked entry is removed by the same write and ``settle.settled`` is told once the
        write succeeded (``checkpoint.settle``). A store that cannot do that ignores it and
        never calls ``settled``, and the message is acked as usual."""
        ...

    def interrupt(
        self, run_id: str, *, fence: Fence, now: float, reason: str | None = None
    ) -> None:
        """running -> interrupted, lease released, checkpoint kept. Fenced like a save."""
        ...

    def park(
        self, run_id: str, *, fence: Fence, now: float, reason: str, needs_format: int
    ) -> None:
        """The attempt found a checkpoint of format ``needs_format``, newer than it reads:
        running -> interrupted with ``reason``, lease released, checkpoint untouched; from now on
        only a claimer that reads that format claims the run (older ones get DEFERRED). Not a
        failure: it never counts toward ``dead``. Fenced like a save."""
        ...

    def transcript(self, run_id: str) -> list[Message]:
        """The live checkpoint's transcript, or the retained final one."""
        ...
