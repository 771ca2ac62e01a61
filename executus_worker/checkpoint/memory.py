"""MemoryStore: the RunStore in one process, with the same guarantees as RedisStore.

Product code, not a test double: the demo, our tests and users' own tests run on it. It keeps
the same stored shapes as Redis (a record "hash" of strings, the transcript as a list of JSON
strings, a meta "hash") and goes through the same codec, so decoding rules and error types are
identical. Lease and retention expiry follow an injectable ``clock`` so tests can expire a
lease without sleeping; the ``now`` arguments are recorded, and, as in Redis, they place runs in
the recovery index (the caller's wall clock, like the sweep's ``now``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from executus_worker.checkpoint import codec
from executus_worker.checkpoint.settle import Settle
from executus_worker.checkpoint.store import (
    BACKLOG_DEFER_LIMIT,
    QUEUED_BACKOFF_DOUBLINGS,
    ClaimResult,
    ClaimStatus,
    Fence,
    IndexAudit,
    RenewStatus,
    Requeued,
    RunningLease,
    SaveAck,
    SweepBatch,
)
from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    Message,
    RunRecord,
    RunRequest,
    RunStatus,
)
from executus_worker.core.stop import OwnershipLost
from executus_worker.errors import (
    CorruptCheckpointError,
    RunNotFoundError,
    StoreError,
    TranscriptBehind,
)

_TERMINAL = {s.value for s in RunStatus if s.terminal}


@dataclass
class _Run:
    rec: dict[str, str]
    msgs: list[str] = field(default_factory=list)
    ckpt: dict[str, str] | None = None
    lease: tuple[str, float] | None = None  # (fence token, deadline on the store clock)
    expires_at: float | None = None  # retention deadline of a finished run (store clock)


class MemoryStore:
    """In-process RunStore. Thread-safe (one lock); ``clock`` drives lease and TTL expiry."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, result_ttl_s: int = 86_400
    ) -> None:
        self._clock = clock
        self._result_ttl_s = result_ttl_s
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        self._active: dict[str, float] = {}  # run_id -> created_at (the index order)
        self._done: dict[str, float] = {}  # run_id -> finished_at
        # The recovery index (store.py): running/interrupted -> due time; queued -> base.
        self._due: dict[str, float] = {}
        self._waiting: dict[str, float] = {}
        self._audit_cursor = 0

    # ------------------------------------------------------------------------ internals

    def _get(self, run_id: str) -> _Run | None:
        run = self._runs.get(run_id)
        if run is not None and run.expires_at is not None and self._clock() >= run.expires_at:
            del self._runs[run_id]
            self._done.pop(run_id, None)
            return None
        return run

    def _lease_live(self, run: _Run) -> bool:
        if run.lease is not None and self._clock() >= run.lease[1]:
            run.lease = None
        return run.lease is not None

    def _decode(self, run_id: str, run: _Run) -> RunRecord:
        return codec.decode_record(run_id, f"memory:{run_id}:rec", run.rec)

    def _fence(self, run_id: str, fence: Fence) -> _Run:
        run = self._get(run_id)
        status = run.rec.get("status") if run else None
        if run is None or status != RunStatus.RUNNING.value or run.rec.get("fence") != fence.token:
            stored = run.rec.get("epoch") if run else None
            raise OwnershipLost(
                f"run {run_id} is {status} at epoch {stored} under another claim; "
                "this writer is no longer its owner"
            )
        return run

    @staticmethod
    def _mark_taken(run: _Run, now: float) -> None:
        # Same bookkeeping as the Lua mark_taken: the replaced owner may prove it survived.
        old = run.rec.get("fence")
        if old:
            run.rec[f"tk:{old}"] = repr(now)

    def _splice(self, run_id: str, run: _Run, base_len: int, new: Sequence[Message]) -> None:
        if len(run.msgs) < base_len:
            raise TranscriptBehind(
                run_id,
                f"memory:{run_id}:msgs: transcript has {len(run.msgs)} messages, "
                f"the writer expected at least {base_len}",
            )
        del run.msgs[base_len:]
        run.msgs.extend(codec.encode_messages(new))

    def _finalize(
        self, run_id: str, run: _Run, status: str, now: float, ttl_s: int, *, keep: bool = False
    ) -> None:
        run.rec.update(status=status, finished_at=repr(now), updated_at=repr(now))
        run.rec.pop("owner", None)
        run.lease = None
        if not keep:  # kept: it expires with the record (run.expires_at), as in Redis
            run.ckpt = None
        run.expires_at = self._clock() + ttl_s
        self._active.pop(run_id, None)
        self._due.pop(run_id, None)
        self._waiting.pop(run_id, None)
        self._done[run_id] = now
        horizon = now - ttl_s
        for old in [k for k, v in self._done.items() if v < horizon]:
            del self._done[old]

    # ------------------------------------------------------------------------ records

    def register(
        self,
        request: RunRequest,
        *,
        run_id: str,
        queue: str,
        now: float,
        rejected: str | None = None,
    ) -> tuple[RunRecord, bool]:
        fields = codec.record_fields(
            request, run_id=run_id, queue=queue, now=now, rejected=rejected
        )
        with self._lock:
            existing = self._get(run_id)
            if existing is not None:
                return self._decode(run_id, existing), False
            run = _Run(rec=fields)
            self._runs[run_id] = run
            self._active[run_id] = now
            self._done.pop(run_id, None)
            self._due.pop(run_id, None)
            self._waiting[run_id] = now
            return self._decode(run_id, run), True

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            run = self._get(run_id)
            return None if run is None else self._decode(run_id, run)

    def claim(
        self, run_id: str, *, owner: str, lease_ttl_s: float, max_attempts: int, now: float
    ) -> ClaimResult:
        with self._lock:
            run = self._get(run_id)
            status = run.rec.get("status") if run else None
            if run is None or status not in {"queued", "interrupted", "running"}:
                return ClaimResult(ClaimStatus.GONE)
            reason = run.rec.get("last_reason", "unknown")
            if status == "running" and self._lease_live(run):
                return ClaimResult(ClaimStatus.BUSY)
            if int(run.rec.get("needs_format", "0")) > CHECKPOINT_FORMAT_VERSION:
                return self._claim_result(ClaimStatus.DEFERRED, run_id, run)
            if status == "running":
                reason = "lease expired while running (worker lost)"
                self._mark_taken(run, now)
            if run.rec.get("cancel_requested") == "1":
                self._finalize(run_id, run, "cancelled", now, self._result_ttl_s)
                return self._claim_result(ClaimStatus.CANCELLED, run_id, run)
            attempts = int(run.rec.get("attempts", "0"))
            # Clean interrupts and survived takeovers are not failures (the Lua claim's rule).
            failures = (
                attempts - int(run.rec.get("interrupts", "0")) - int(run.rec.get("survived", "0"))
            )
            # The previous claim's takeover is not counted while its owner may still refund
            # it (same rule as the Lua claim).
            taken = run.rec.get(f"tk:{run.rec.get('fence')}")
            if taken is not None and now - float(taken) < 2 * lease_ttl_s:
                failures -= 1
            if failures + 1 > max_attempts:
                run.rec["error"] = f"gave up after {attempts} attempts: {reason}"
                self._finalize(run_id, run, "dead", now, self._result_ttl_s)
                return self._claim_result(ClaimStatus.DEAD, run_id, run)
            epoch = int(run.rec.get("epoch", "0")) + 1
            fence = Fence.new(epoch)
            run.rec.update(
                status="running",
                epoch=str(epoch),
                attempts=str(attempts + 1),
                owner=owner,
                fence=fence.token,
                started_at=repr(now),
                updated_at=repr(now),
                last_reason=reason,
            )
            run.lease = (fence.token, self._clock() + lease_ttl_s)
            run.rec.pop("sweep_checks", None)
            self._waiting.pop(run_id, None)
            self._due[run_id] = now + lease_ttl_s
            return self._claim_result(ClaimStatus.CLAIMED, run_id, run, fence)

    def _claim_result(
        self, status: ClaimStatus, run_id: str, run: _Run, fence: Fence | None = None
    ) -> ClaimResult:
        try:
            record = self._decode(run_id, run)
        except CorruptCheckpointError as exc:
            if fence is None:
                raise
            # Claimed already: hand the claim out, or nobody could end the run.
            return ClaimResult(status, epoch=fence.epoch, fence=fence, problem=str(exc))
        return ClaimResult(
            status, epoch=record.epoch, attempts=record.attempts, record=record, fence=fence
        )

    def renew_many(
        self,
        leases: Sequence[tuple[str, Fence]],
        *,
        lease_ttl_s: float,
        now: float | None = None,
    ) -> list[RenewStatus | StoreError]:
        return [
            self.renew(run_id, fence=f, lease_ttl_s=lease_ttl_s, now=now) for run_id, f in leases
        ]

    def running_leases(
        self, *, cursor: int = 0, batch: int = 1000
    ) -> tuple[list[RunningLease], int]:
        with self._lock:
            ids = list(self._active)[cursor : cursor + batch]
            found = []
            for run_id in ids:
                run = self._get(run_id)
                if run is None or run.rec.get("status") != "running":
                    continue
                owner, fence = run.rec.get("owner"), run.rec.get("fence")
                if owner and fence:
                    found.append(RunningLease(run_id, owner, fence))
        return found, (0 if len(ids) < batch else cursor + len(ids))

    def release_lease(self, run_id: str, *, fence_token: str) -> bool:
        with self._lock:
            run = self._get(run_id)
            if run is None or not self._lease_live(run) or run.lease is None:
                return False
            if run.lease[0] != fence_token or run.rec.get("fence") != fence_token:
                return False
            if run.rec.get("status") != "running":
                return False
            run.lease = None
            self._due[run_id] = 0.0  # due at once, as RELEASE does
            return True

    def refund(self, run_id: str, *, fence: Fence) -> bool:
        with self._lock:
            run = self._get(run_id)
            if run is None or run.rec.pop(f"tk:{fence.token}", None) is None:
                return False
            run.rec["survived"] = str(int(run.rec.get("survived", "0")) + 1)
            return True

    def renew(
        self, run_id: str, *, fence: Fence, lease_ttl_s: float, now: float | None = None
    ) -> RenewStatus:
        value = fence.token
        with self._lock:
            # RedisStore's ZADD XX GT, sent with every renewal whatever RENEW answers.
            if run_id in self._due:
                deadline = (time.time() if now is None else now) + lease_ttl_s
                self._due[run_id] = max(self._due[run_id], deadline)
            run = self._get(run_id)
            if run is None:
                return RenewStatus.LOST
            if self._lease_live(run):
                if run.lease is None or run.lease[0] != value:
                    return RenewStatus.LOST
            elif run.rec.get("status") != "running" or run.rec.get("fence") != value:
                return RenewStatus.LOST
            # A lapsed lease nobody took over is taken back (see the Lua RENEW for why).
            run.lease = (value, self._clock() + lease_ttl_s)
            if run.rec.get("cancel_requested") == "1":
                return RenewStatus.CANCEL
            return RenewStatus.OK

    def request_cancel(self, run_id: str, *, now: float) -> RunRecord:
        with self._lock:
            run = self._get(run_id)
            if run is None or "status" not in run.rec:
                raise RunNotFoundError(run_id)
            status = run.rec["status"]
            if status not in _TERMINAL:
                run.rec.update(cancel_requested="1", updated_at=repr(now))
                if status != "running" or not self._lease_live(run):
                    self._finalize(run_id, run, "cancelled", now, self._result_ttl_s)
            return self._decode(run_id, run)

    def list_runs(self, *, status: RunStatus | None = None, limit: int = 100) -> list[RunRecord]:
        with self._lock:
            found: list[RunRecord] = []
            for run_id in list(self._active) + list(self._done):
                run = self._get(run_id)
                if run is None:
                    continue
                try:
                    record = self._decode(run_id, run)
                except CorruptCheckpointError:
                    continue
                if status is None or record.status == status:
                    found.append(record)
            # The same order as the Redis indexes: finished runs by finished_at, others (and
            # the mixed listing) by created_at, newest first.
            if status is not None and status.terminal:
                found.sort(key=lambda r: r.finished_at or 0.0, reverse=True)
            else:
                found.sort(key=lambda r: r.created_at, reverse=True)
            return found[: max(limit, 0)]

    def sweep(
        self,
        *,
        now: float,
        queued_timeout_s: float,
        batch: int = 1000,
        backlogged: Callable[[str], bool] | None = None,
    ) -> SweepBatch:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        with self._lock:
            due = _first(self._due, now, batch)
            waiting = _first(self._waiting, now - queued_timeout_s, batch)
            answers: dict[str, bool] = {}
            requeued: list[Requeued] = []
            errors: list[tuple[str, str]] = []
            deferred = 0
            seen = set(due)
            for run_id in due + [i for i in waiting if i not in seen]:
                run = self._get(run_id)
                queue = run.rec.get("queue") if run is not None else None
                flag = False
                if backlogged is not None and run_id in waiting and queue is not None:
                    if queue not in answers:
                        answers[queue] = backlogged(queue)
                    flag = answers[queue]
                outcome = self._requeue(run_id, run, now, queued_timeout_s, flag)
                if isinstance(outcome, Requeued):
                    requeued.append(outcome)
                elif outcome == "deferred":
                    deferred += 1
                elif outcome is not None:
                    errors.append((run_id, outcome))
            ids = seen | set(waiting)
            more = len(due) == batch or len(waiting) == batch
            return SweepBatch(requeued, errors, scanned=len(ids), deferred=deferred, more=more)

    def _requeue(  # noqa: PLR0911, PLR0912 -- a branch per branch of the Lua REQUEUE
        self, run_id: str, run: _Run | None, now: float, wait_s: float, backlogged: bool
    ) -> Requeued | str | None:
        """The Lua REQUEUE script, in Python: a Requeued, "deferred", None (skipped), or what
        was wrong (reported)."""

        def unindex(why: str) -> str:
            for index in (self._active, self._due, self._waiting):
                index.pop(run_id, None)
            return f"removed from the run indexes: {why}"

        def later(why: str) -> str:
            self._waiting.pop(run_id, None)
            self._due[run_id] = now + wait_s
            return f"skipped unreadable record: {why}"

        if run is None:
            return unindex("indexed for recovery but has no record")
        status, queue = run.rec.get("status"), run.rec.get("queue")
        if status is None:
            return later("record has no status")
        if status in _TERMINAL:
            return unindex(f"terminal ({status}) but still indexed for recovery")
        if queue is None:
            return later("record has no queue")
        request = run.rec.get("request")
        if status == "running":
            if self._lease_live(run):
                assert run.lease is not None
                self._waiting.pop(run_id, None)
                self._due[run_id] = now + (run.lease[1] - self._clock())
                return None
            if request is None:
                return later("record has no request")
            run.rec["last_reason"] = "lease expired while running (worker lost)"
            self._mark_taken(run, now)
        elif status == "queued":
            self._due.pop(run_id, None)
            enqueued = _float(run.rec.get("enqueued_at"))
            base = self._waiting.get(run_id, enqueued)
            if base > now - wait_s:
                self._waiting[run_id] = base
                return None
            if request is None:
                return later("record has no request")
            checks = int(run.rec.get("sweep_checks", "0")) + 1
            backoff = 2 ** min(checks, QUEUED_BACKOFF_DOUBLINGS) - 1
            self._waiting[run_id] = now + wait_s * backoff
            run.rec["sweep_checks"] = str(checks)
            if backlogged and now - enqueued < BACKLOG_DEFER_LIMIT * wait_s:
                return "deferred"
            run.rec.update(enqueued_at=repr(now), updated_at=repr(now))
            return Requeued(run_id, queue, request, RunStatus.QUEUED)
        elif status != "interrupted":
            return later(f"unknown status {status}")
        elif request is None:
            return later("record has no request")
        run.rec.update(status="queued", enqueued_at=repr(now), updated_at=repr(now))
        run.rec.pop("owner", None)
        run.rec.pop("sweep_checks", None)
        self._due.pop(run_id, None)
        self._waiting[run_id] = now
        return Requeued(run_id, queue, request, RunStatus(status))

    def audit_index(self, *, now: float, limit: int = 500) -> IndexAudit:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._lock:
            ordered = sorted(self._active, key=lambda k: (self._active[k], k))
            full = len(self._due) + len(self._waiting) < len(ordered)
            start = self._audit_cursor if self._audit_cursor < len(ordered) else 0
            span = len(ordered) if full else min(limit, len(ordered) - start)
            checked = added = 0
            for step in range(span):
                run_id = ordered[(start + step) % len(ordered)]
                checked += 1
                if run_id not in self._due and run_id not in self._waiting:
                    self._due[run_id] = now
                    added += 1
            end = start + span
            self._audit_cursor = end % len(ordered) if ordered and end < len(ordered) else 0
            return IndexAudit(checked=checked, added=added)

    # ------------------------------------------------------------------------ checkpoints

    def load_checkpoint(self, run_id: str) -> Checkpoint | None:
        with self._lock:
            run = self._get(run_id)
            if run is None or run.ckpt is None:
                return None
            meta, items = dict(run.ckpt), list(run.msgs)
        return codec.decode_checkpoint(
            run_id,
            meta_key=f"memory:{run_id}:ckpt",
            msgs_key=f"memory:{run_id}:msgs",
            meta=meta,
            messages_json=codec.join_items(items),
        )

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
        if meta is None:
            meta = codec.meta_fields(checkpoint, epoch=fence.epoch, now=now)
        with self._lock:
            run = self._fence(run_id, fence)
            self._check_seq(run_id, run, expect_seq)
            self._splice(run_id, run, base_len, new_messages)
            run.ckpt = {**(run.ckpt or {}), **meta, "msg_count": str(len(run.msgs)), "wseq": seq}
            run.rec["updated_at"] = repr(now)
            return SaveAck(len(run.msgs), run.rec.get("cancel_requested") == "1")

    @staticmethod
    def _check_seq(run_id: str, run: _Run, expect_seq: str) -> None:
        stored = (run.ckpt or {}).get("wseq")
        if expect_seq and stored != expect_seq:
            raise TranscriptBehind(
                run_id,
                f"memory:{run_id}:ckpt: the last stored write is {stored}, "
                f"the writer made {expect_seq}",
            )

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
        del settle  # no broker lives here: the message is acked as usual (never settled)
        if not status.terminal:
            raise ValueError(f"finish needs a terminal status, not {status.value!r}")
        encoded_output = codec.dumps(output)
        with self._lock:
            run = self._fence(run_id, fence)
            if not keep_checkpoint:
                self._check_seq(run_id, run, expect_seq)
                self._splice(run_id, run, base_len, new_messages)
            run.rec["output"] = encoded_output
            if error is None:
                run.rec.pop("error", None)
            else:
                run.rec["error"] = error
            self._finalize(run_id, run, status.value, now, result_ttl_s, keep=keep_checkpoint)

    def interrupt(
        self, run_id: str, *, fence: Fence, now: float, reason: str | None = None
    ) -> None:
        with self._lock:
            run = self._fence(run_id, fence)
            run.rec.update(
                status="interrupted",
                updated_at=repr(now),
                last_reason=reason or "interrupted (worker shutdown)",
                interrupts=str(int(run.rec.get("interrupts", "0")) + 1),
            )
            run.rec.pop("owner", None)
            run.lease = None
            self._waiting.pop(run_id, None)
            self._due[run_id] = now  # a recovery candidate at once

    def park(
        self, run_id: str, *, fence: Fence, now: float, reason: str, needs_format: int
    ) -> None:
        with self._lock:
            self.interrupt(run_id, fence=fence, now=now, reason=reason)
            run = self._runs[run_id]
            had = int(run.rec.get("needs_format", "0"))
            run.rec["needs_format"] = str(max(had, needs_format))
            run.rec["parks"] = str(int(run.rec.get("parks", "0")) + 1)

    def transcript(self, run_id: str) -> list[Message]:
        with self._lock:
            run = self._get(run_id)
            if run is None:
                raise RunNotFoundError(run_id)
            items = list(run.msgs)
        return codec.decode_messages(run_id, f"memory:{run_id}:msgs", codec.join_items(items))


def _first(index: dict[str, float], at_most: float, n: int) -> list[str]:
    """The first ``n`` ids scored at most ``at_most``, by (score, id) like ZRANGEBYSCORE.
    A scan of the dict: in one process that is cheap; RedisStore reads a sorted set."""
    return [k for _, k in sorted((v, k) for k, v in index.items() if v <= at_most)[:n]]


def _float(value: str | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
