"""What ``executus.run`` does with one delivery, free of Celery so it is testable in-process.

    read the message  ->  claim (registering a run seen for the first time)
        ->  resolve the agent  ->  heartbeat + execute (the executor records the ending)

The worker never crashes or loops on a delivery: every path returns normally, so Celery acks.
A delivery the claim refuses is a duplicate (broker redelivery, a second sweep, a message
published three times) and costs one round trip. Nothing is retried here: a crashed attempt
leaves its lease to expire, and the recovery sweep re-publishes the run (the store's claim
counts attempts and declares the run dead past ``max_recovery_attempts``).

The stored record, not the message, is the truth. A message only says "run X now": for a run
that exists, its body is never used -- a malformed, oversized or stale duplicate is logged and
then serves as one more delivery of the stored run (the claim turns it into a no-op if another
attempt owns the run). Only a run seen for the first time (a raw ``send_task``) is registered
from its message; if that message is unusable, the run is registered *rejected* and failed with
the reason, so the sender finds a record instead of "not found" forever. A message without any
readable run id is logged and dropped.

A run whose stored request does not decode here (a newer client added a field) is failed with
that reason rather than run without what it asked for; so is a run whose attempt raised past the
executor. Either way the record says what went wrong, and the stored checkpoint is kept.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import JsonValue

from executus_worker.checkpoint.store import ClaimResult, ClaimStatus, Fence, RunStore
from executus_worker.core.models import OutcomeKind, RunInfo, RunOutcome, RunRequest
from executus_worker.core.models import RunStatus as Status
from executus_worker.core.outcome import describe
from executus_worker.core.ports import Agent, Audit, Deps, NullAudit
from executus_worker.core.stop import StopToken
from executus_worker.errors import (
    CheckpointError,
    ConfigError,
    StoreError,
    UnknownAgentError,
)
from executus_worker.settings import Settings
from executus_worker.worker.heartbeat import Heartbeats, Lease
from executus_worker.worker.identity import process_owner
from executus_worker.worker.messages import Delivery, read_delivery

log = logging.getLogger(__name__)


Execute = Callable[[Agent, RunInfo, Deps, StopToken], RunOutcome]
# (run id, owner) -> the owner's claim already made for this delivery and when it was sent, or
# None (worker/preclaim.py: on a solo worker the claim rides with the message's receipt).
Preclaimed = Callable[[str, str], tuple[ClaimResult, float] | None]


class Agents(Protocol):
    def get(self, name: str) -> Agent:
        """The agent called ``name``; raises UnknownAgentError."""
        ...


@dataclass(frozen=True)
class Handled:
    """What became of one delivery (returned by the task, logged, asserted in tests)."""

    # executed | parked | duplicate | deferred | cancelled | dead | rejected | failed | crashed
    action: str
    run_id: str | None = None
    outcome: OutcomeKind | None = None
    detail: str = ""
    output: JsonValue = None  # a completed run's output (what Celery's SUCCESS carries)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "action": self.action,
            "run_id": self.run_id,
            "outcome": self.outcome.value if self.outcome else None,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class _Claimed:
    # Per delivery, never on the handler: a threads-pool worker handles several at once.
    owner: str
    fence: Fence
    attempts: int
    request: RunRequest
    run: RunInfo  # the attempt as the kernel sees it
    sent_at: float  # monotonic time the claim was sent: when its lease certainly started


def default_owner() -> str:
    # Computed per delivery: a prefork child has its own pid, and the owner names the process
    # precisely enough that a restarted worker can prove it dead (worker/identity.py).
    return process_owner()


class RunRecorder:
    """Claiming a run and recording that it cannot run: needs only the store, so the task can
    still leave a record when the rest of the handler cannot even be built."""

    def __init__(
        self,
        store: RunStore,
        settings: Settings,
        *,
        owner: Callable[[], str] = default_owner,
        clock: Callable[[], float] = time.time,
        audit: Audit | None = None,
        preclaimed: Preclaimed | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self.audit = audit or NullAudit()
        self.preclaimed = preclaimed
        self.monotonic = monotonic

    def event(
        self,
        run_id: str,
        request: RunRequest,
        event: str,
        data: dict[str, JsonValue],
        *,
        epoch: int = 0,
    ) -> None:
        """An audit event outside the executor; a failing audit is logged, never fatal."""
        try:
            run = RunInfo.from_request(request, run_id=run_id, epoch=epoch)
        except Exception:
            log.exception("audit failed for run %s (ignored)", run_id)
            return
        self.run_event(run, event, data)

    def run_event(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        """``event`` for an attempt whose RunInfo is already built."""
        try:
            self.audit.record(run, event, data)
        except Exception:
            log.exception("audit failed for run %s (ignored)", run.run_id)

    def try_claim(self, run_id: str, owner: str) -> tuple[ClaimResult, float]:
        """The claim and the monotonic time it was sent (when its lease certainly started). A
        claim made when the message was received (worker/preclaim.py) is taken, not made
        again."""
        early = self.preclaimed(run_id, owner) if self.preclaimed is not None else None
        if early is not None:
            return early
        sent_at = self.monotonic()
        claim = self.store.claim(
            run_id,
            owner=owner,
            lease_ttl_s=self.settings.lease_ttl_s,
            max_attempts=self.settings.max_recovery_attempts,
            now=self.clock(),
        )
        return claim, sent_at

    def known(self, run_id: str) -> bool:
        try:
            return self.store.get(run_id) is not None
        except CheckpointError:
            return True  # a record that does not decode still exists

    def register(self, run_id: str, delivery: Delivery) -> None:
        """First sight of a run (a raw send_task): its message is all there is. An unusable
        message registers the run *rejected*: no claim ever executes it (see codec)."""
        if delivery.request is not None:
            request, rejected = delivery.request, None
        else:
            request = RunRequest(run_id=run_id, agent=delivery.agent)
            rejected = delivery.problem or "unreadable message"
        queue = self.settings.queue_for(request.model_tier)
        _, created = self.store.register(
            request, run_id=run_id, queue=queue, now=self.clock(), rejected=rejected
        )
        if created:
            self.event(run_id, request, "enqueued", {"queue": queue, "by": "worker"})

    def fail(self, run_id: str, fence: Fence, error: str, request: RunRequest | None) -> None:
        # Whatever an earlier attempt stored stays exactly as it is: the record shows it.
        self.store.finish(
            run_id,
            fence=fence,
            status=Status.FAILED,
            output=None,
            error=error,
            base_len=0,
            new_messages=[],
            now=self.clock(),
            result_ttl_s=self.settings.result_ttl_s,
            keep_checkpoint=True,
        )
        log.error("run %s failed: %s", run_id, error)
        if request is not None:
            self.event(run_id, request, "failed", {"error": error}, epoch=fence.epoch)

    def fail_unowned(self, delivery: Delivery, error: str) -> Handled:
        """Record ``error`` as the ending of the run ``delivery`` names: claim it (registering
        it rejected if unknown) and fail it. A run another attempt owns is left to that one."""
        run_id = delivery.run_id
        if run_id is None:
            log.error("dropped an executus.run message without a usable run id: %s", error)
            return Handled("rejected", None, detail=error)
        owner = self.owner()
        claim, _ = self.try_claim(run_id, owner)
        if claim.status is ClaimStatus.GONE and not self.known(run_id):
            self.register(run_id, Delivery(run_id, None, error, delivery.agent))
            claim, _ = self.try_claim(run_id, owner)
        if claim.status is ClaimStatus.CLAIMED and claim.fence is not None:
            self.fail(run_id, claim.fence, error, claim.record.request if claim.record else None)
            return Handled("failed", run_id, OutcomeKind.FAILED, error)
        log.error("run %s: %s (not recorded: the run is %s)", run_id, error, claim.status.value)
        return Handled("rejected", run_id, detail=error)


def record_unhandled(records: RunRecorder, delivery: Delivery, exc: Exception) -> Handled:
    """An exception escaped the handling of ``delivery``: fail the run it names with it, so
    the run is not left ``queued`` with nothing said (a StoreError is the task's to retry)."""
    error = f"the worker could not handle this run: {describe(exc)}"
    try:
        return records.fail_unowned(delivery, error)
    except StoreError:
        raise
    except Exception:
        log.exception("run %s: recording why it could not be handled failed", delivery.run_id)
        return Handled("crashed", delivery.run_id, detail=error)


class RunHandler:
    def __init__(
        self,
        *,
        store: RunStore,
        agents: Agents,
        deps: Deps,
        settings: Settings,
        drain: StopToken,
        execute: Execute,
        owner: Callable[[], str] = default_owner,
        clock: Callable[[], float] = time.time,
        heartbeats: Heartbeats | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        preclaimed: Preclaimed | None = None,
    ) -> None:
        self._store = store
        self._agents = agents
        self._deps = deps
        self._settings = settings
        self._drain = drain
        self._execute = execute
        self._owner = owner
        self._clock = clock
        self._monotonic = monotonic
        self._records = RunRecorder(
            store, settings, owner=owner, clock=clock, audit=deps.audit,
            preclaimed=preclaimed, monotonic=monotonic,
        )  # fmt: skip
        self._heartbeats = heartbeats or Heartbeats(store, lease_ttl_s=settings.lease_ttl_s)
        # Per-process tallies (duplicates above all): logged, and handy in tests and `inspect`.
        self.counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()

    def handle(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], *, task_id: str | None = None
    ) -> Handled:
        delivery = read_delivery(
            args, kwargs, task_id=task_id, max_bytes=self._settings.max_payload_bytes
        )
        try:
            result = self._handle(delivery)
        except StoreError:
            raise  # the store is unreachable: the task retries this delivery (tasks.py)
        except Exception as exc:
            # A bug before the run was claimed: still leave a record that says what happened.
            log.exception("run %s: the delivery raised", delivery.run_id)
            result = record_unhandled(self._records, delivery, exc)
        with self._counts_lock:  # a threads-pool worker handles deliveries concurrently
            self.counts[result.action] += 1
        return result

    def _handle(self, delivery: Delivery) -> Handled:
        run_id = delivery.run_id
        if run_id is None:
            error = delivery.problem or "no run id"
            log.error("dropped an executus.run message without a usable run id: %s", error)
            return Handled("rejected", None, detail=error)
        claimed = self._claim(run_id, delivery)
        if isinstance(claimed, Handled):
            return claimed
        try:
            return self._run(run_id, claimed)
        except StoreError:
            raise
        except Exception as exc:
            # The executor records every ending itself; reaching here is a bug. Fail the run
            # with what happened rather than leave a lease to expire with a misleading reason.
            log.exception("run %s: attempt crashed outside the executor's handling", run_id)
            error = f"the worker failed while running this attempt: {describe(exc)}"
            try:
                self._records.fail(run_id, claimed.fence, error, claimed.request)
            except Exception:
                log.exception("run %s: recording the crash failed; its lease expires", run_id)
                return Handled("crashed", run_id, detail=error)
            return Handled("failed", run_id, OutcomeKind.FAILED, error)

    # -- execution -------------------------------------------------------------------------

    def _run(self, run_id: str, claimed: _Claimed) -> Handled:
        request, fence = claimed.request, claimed.fence
        try:
            agent = self._agents.get(request.agent)
        except (UnknownAgentError, ConfigError) as exc:
            # Also a broken agents-file entry: fail with its message now rather than crash
            # every attempt and end `dead` with a reason that hides the cause.
            self._records.fail(run_id, fence, str(exc), request)
            return Handled("failed", run_id, OutcomeKind.FAILED, str(exc))
        run = claimed.run
        s = self._settings
        token = StopToken(parents=[self._drain])
        lease = Lease(
            run_id=run_id,
            fence=fence,
            lease_ttl_s=s.lease_ttl_s,
            margin_s=s.effective_lease_margin_s,
            stop=token,
            sent_at=claimed.sent_at,
            monotonic=self._monotonic,
        )
        token.guard = lease.ensure
        log.info(
            "run %s: attempt %d (epoch %d) of %s started",
            run_id, run.attempt, fence.epoch, agent.name,
        )  # fmt: skip
        with self._heartbeats.hold(lease):
            outcome = self._execute(agent, run, self._deps, token)
        if outcome.kind is OutcomeKind.LOST:
            self._refund(run_id, fence)
        if outcome.kind is OutcomeKind.PARKED:
            log.warning(
                "run %s: left for a worker that reads its checkpoint: %s", run_id, outcome.error
            )
            return Handled("parked", run_id, outcome.kind, outcome.error or "")
        return Handled("executed", run_id, outcome.kind, outcome.error or "", outcome.output)

    def _refund(self, run_id: str, fence: Fence) -> None:
        """This process outlived its lease (a partition, a stall, an outage): if another
        claim booked our attempt as a crash, undo that -- only dead processes count toward
        ``dead``. Best effort: the store answered a moment ago, but may not now."""
        for delay in (0.0, 0.2, 1.0):
            time.sleep(delay)
            try:
                if self._store.refund(run_id, fence=fence):
                    log.info("run %s: epoch %d was replaced but survived; not a crash",
                             run_id, fence.epoch)  # fmt: skip
                return
            except StoreError as exc:
                log.warning("run %s: recording that epoch %d survived failed: %s",
                            run_id, fence.epoch, exc)  # fmt: skip

    def _claim(self, run_id: str, delivery: Delivery) -> _Claimed | Handled:
        """Claim the run: what this delivery now owns, or why it owns nothing.

        Claim first, register only when the run is unknown: the usual delivery (registered by
        our client before publishing) costs one round trip, not two. A raw send_task from
        another service is registered here, on first sight (see executus_worker.client).
        """
        records = self._records
        owner = self._owner()
        claim, sent_at = records.try_claim(run_id, owner)
        if claim.status is ClaimStatus.GONE and not records.known(run_id):
            records.register(run_id, delivery)
            claim, sent_at = records.try_claim(run_id, owner)
        elif delivery.problem is not None:
            # The run exists: the message is only a wake-up, its body is never used.
            log.warning(
                "run %s: ignored a malformed message body (%s); the stored run is the truth",
                run_id, delivery.problem,
            )  # fmt: skip
        if claim.status is ClaimStatus.CLAIMED and claim.fence is not None:
            record = claim.record
            if record is None or record.request_error is not None:
                # Claimed, but not runnable: the record does not decode, its request does not
                # decode on this version, or it was registered rejected. End it with the reason.
                error = (record.request_error if record else None) or claim.problem
                error = error or "the run record does not decode"
                records.fail(run_id, claim.fence, error, record.request if record else None)
                return Handled("failed", run_id, OutcomeKind.FAILED, error)
            fence = claim.fence
            run = RunInfo.from_request(
                record.request, run_id=run_id, epoch=fence.epoch, attempt=claim.attempts,
                fence=fence.token,
            )  # fmt: skip
            records.run_event(
                run, "claimed", {"owner": owner, "epoch": fence.epoch, "attempt": claim.attempts}
            )
            if claim.attempts > 1:
                # Every later attempt is a recovery (a sweep's requeue, a redelivery, a boot
                # takeover); the store recorded why the previous attempt let go of the run.
                records.run_event(run, "recovered", {"reason": record.last_reason or "unknown"})
            return _Claimed(owner, fence, claim.attempts, record.request, run, sent_at)
        if claim.status in {ClaimStatus.BUSY, ClaimStatus.GONE}:
            log.info("run %s: duplicate delivery ignored (%s)", run_id, claim.status.value)
            return Handled("duplicate", run_id, detail=claim.status.value)
        if claim.status is ClaimStatus.DEFERRED:
            parked = claim.record.last_reason if claim.record else None
            log.warning(
                "run %s: its checkpoint needs a newer worker (format %s); left for one: %s",
                run_id, claim.record.needs_format if claim.record else "?", parked,
            )  # fmt: skip
            return Handled("deferred", run_id, detail=parked or "")
        # For the audit event: the stored request, else what the message said.
        request = claim.record.request if claim.record else delivery.request
        request = request or RunRequest(run_id=run_id, agent=delivery.agent)
        if claim.status is ClaimStatus.CANCELLED:
            log.info("run %s: cancelled before it started", run_id)
            records.event(run_id, request, "cancelled", {"before_start": True})
            return Handled("cancelled", run_id, OutcomeKind.CANCELLED)
        error = claim.record.error if claim.record and claim.record.error else "too many attempts"
        log.error("run %s: dead after %d attempts: %s", run_id, claim.attempts, error)
        records.event(run_id, request, "dead", {"attempts": claim.attempts, "error": error})
        return Handled("dead", run_id, detail=error)
