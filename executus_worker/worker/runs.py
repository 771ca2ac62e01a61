"""What ``executus.run`` does with one delivery, free of Celery so it is testable in-process.

    validate the message  ->  claim (registering a run seen for the first time)
        ->  resolve the agent  ->  heartbeat + execute (the executor records the ending)

The worker never crashes or loops on a delivery: every path returns normally, so Celery acks.
A delivery the claim refuses is a duplicate (broker redelivery, a second sweep, a message
published three times) and costs one round trip. Nothing is retried here: a crashed attempt
leaves its lease to expire, and the recovery sweep re-publishes the run (the store's claim
counts attempts and declares the run dead past ``max_recovery_attempts``).
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
from executus_worker.core.ports import Agent, Deps
from executus_worker.core.stop import StopToken
from executus_worker.errors import ConfigError, PayloadError, StoreError, UnknownAgentError
from executus_worker.settings import Settings
from executus_worker.worker.heartbeat import Heartbeats, Lease
from executus_worker.worker.identity import process_owner
from executus_worker.worker.messages import parse_request, readable_agent, split_args, valid_run_id

log = logging.getLogger(__name__)


Execute = Callable[[Agent, RunInfo, Deps, StopToken], RunOutcome]


class Agents(Protocol):
    def get(self, name: str) -> Agent:
        """The agent called ``name``; raises UnknownAgentError."""
        ...


@dataclass(frozen=True)
class Handled:
    """What became of one delivery (returned by the task, logged, asserted in tests)."""

    action: str  # executed | duplicate | cancelled | dead | rejected | failed | crashed
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
    sent_at: float  # monotonic time the claim was sent: when its lease certainly started


def default_owner() -> str:
    # Computed per delivery: a prefork child has its own pid, and the owner names the process
    # precisely enough that a restarted worker can prove it dead (worker/identity.py).
    return process_owner()


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
        self._heartbeats = heartbeats or Heartbeats(store, lease_ttl_s=settings.lease_ttl_s)
        # Per-process tallies (duplicates above all): logged, and handy in tests and `inspect`.
        self.counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()

    def handle(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], *, task_id: str | None = None
    ) -> Handled:
        result = self._handle(args, kwargs, task_id)
        with self._counts_lock:  # a threads-pool worker handles deliveries concurrently
            self.counts[result.action] += 1
        return result

    # -- validation ------------------------------------------------------------------------

    def _handle(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], task_id: str | None
    ) -> Handled:
        raw_run_id, raw_request, shape_error = split_args(args, kwargs)
        run_id = valid_run_id(raw_run_id)
        if shape_error is None and raw_run_id is not None and run_id is None:
            shape_error = f"invalid run id {str(raw_run_id)[:80]!r}"
        try:
            if shape_error is not None:
                raise PayloadError(shape_error)
            request = parse_request(raw_request, self._settings.max_payload_bytes)
            if run_id is not None and request.run_id not in {None, run_id}:
                raise PayloadError(f"run id {run_id!r} does not match the request's")
        except PayloadError as exc:
            return self._reject(run_id, str(exc), raw_request)
        # A raw send_task without any run id: the task id is stable across redeliveries.
        run_id = run_id or request.run_id or valid_run_id(task_id)
        if run_id is None:
            return self._reject(None, "no run id", raw_request)
        return self._run(run_id, request)

    def _reject(self, run_id: str | None, error: str, raw_request: object) -> Handled:
        """A payload we cannot run: fail its run if it names one, else log and drop it."""
        if run_id is None:
            log.error("dropped an executus.run message without a usable run id: %s", error)
            return Handled("rejected", None, detail=error)
        log.error("run %s: unacceptable message: %s", run_id, error)
        placeholder = RunRequest(run_id=run_id, agent=readable_agent(raw_request))
        claimed = self._claim(run_id, placeholder, self._settings.default_queue)
        if isinstance(claimed, Handled):
            return claimed
        self._fail(run_id, claimed.fence, error, claimed.request)
        return Handled("failed", run_id, OutcomeKind.FAILED, error)

    # -- execution -------------------------------------------------------------------------

    def _run(self, run_id: str, request: RunRequest) -> Handled:
        claimed = self._claim(run_id, request, self._settings.queue_for(request.model_tier))
        if isinstance(claimed, Handled):
            return claimed
        request, fence = claimed.request, claimed.fence
        try:
            agent = self._agents.get(request.agent)
        except (UnknownAgentError, ConfigError) as exc:
            # Also a broken agents-file entry: fail with its message now rather than crash
            # every attempt and end `dead` with a reason that hides the cause.
            self._fail(run_id, fence, str(exc), request)
            return Handled("failed", run_id, OutcomeKind.FAILED, str(exc))
        run = RunInfo.from_request(
            request, run_id=run_id, epoch=fence.epoch, attempt=claimed.attempts, fence=fence.token
        )
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
        try:
            with self._heartbeats.hold(lease):
                outcome = self._execute(agent, run, self._deps, token)
        except Exception as exc:
            # The executor records every ending itself; reaching here is a bug or a dead store.
            # The lease expires and the sweep re-publishes the run (attempts are capped).
            log.exception("run %s: attempt crashed outside the executor's handling", run_id)
            return Handled("crashed", run_id, detail=f"{type(exc).__name__}: {exc}")
        if outcome.kind is OutcomeKind.LOST:
            self._refund(run_id, fence)
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

    def _claim(self, run_id: str, request: RunRequest, queue: str) -> _Claimed | Handled:
        """Claim the run: what this delivery now owns, or why it owns nothing.

        Claim first, register only when the run is unknown: the usual delivery (registered by
        our client before publishing) costs one round trip, not two. A raw send_task from
        another service is registered here, on first sight (see executus_worker.client).
        """
        owner = self._owner()
        sent_at = self._monotonic()
        claim = self._try_claim(run_id, owner)
        if claim.status is ClaimStatus.GONE and self._store.get(run_id) is None:
            _, created = self._store.register(
                request, run_id=run_id, queue=queue, now=self._clock()
            )
            if created:
                self._event(run_id, request, "enqueued", {"queue": queue, "by": "worker"})
            sent_at = self._monotonic()
            claim = self._try_claim(run_id, owner)
        if claim.status is ClaimStatus.CLAIMED and claim.fence is not None:
            # The record, not the message, is the truth: a stale duplicate may carry an old
            # request.
            stored = claim.record.request if claim.record else request
            epoch = claim.fence.epoch
            self._event(
                run_id, stored, "claimed",
                {"owner": owner, "epoch": epoch, "attempt": claim.attempts}, epoch=epoch,
            )  # fmt: skip
            if claim.attempts > 1 and claim.record is not None:
                # Every later attempt is a recovery (a sweep's requeue, a redelivery, a boot
                # takeover); the store recorded why the previous attempt let go of the run.
                why = claim.record.last_reason or "unknown"
                self._event(run_id, stored, "recovered", {"reason": why}, epoch=epoch)
            return _Claimed(owner, claim.fence, claim.attempts, stored, sent_at)
        if claim.status in {ClaimStatus.BUSY, ClaimStatus.GONE}:
            log.info("run %s: duplicate delivery ignored (%s)", run_id, claim.status.value)
            return Handled("duplicate", run_id, detail=claim.status.value)
        if claim.status is ClaimStatus.CANCELLED:
            log.info("run %s: cancelled before it started", run_id)
            self._event(run_id, request, "cancelled", {"before_start": True})
            return Handled("cancelled", run_id, OutcomeKind.CANCELLED)
        error = claim.record.error if claim.record and claim.record.error else "too many attempts"
        log.error("run %s: dead after %d attempts: %s", run_id, claim.attempts, error)
        self._event(run_id, request, "dead", {"attempts": claim.attempts, "error": error})
        return Handled("dead", run_id, detail=error)

    def _event(
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
            self._deps.audit.record(run, event, data)
        except Exception:
            log.exception("audit failed for run %s (ignored)", run_id)

    def _try_claim(self, run_id: str, owner: str) -> ClaimResult:
        return self._store.claim(
            run_id,
            owner=owner,
            lease_ttl_s=self._settings.lease_ttl_s,
            max_attempts=self._settings.max_recovery_attempts,
            now=self._clock(),
        )

    def _fail(self, run_id: str, fence: Fence, error: str, request: RunRequest) -> None:
        # Keep whatever transcript an earlier attempt left: the record shows what happened.
        kept = len(self._store.transcript(run_id))
        self._store.finish(
            run_id,
            fence=fence,
            status=Status.FAILED,
            output=None,
            error=error,
            base_len=kept,
            new_messages=[],
            now=self._clock(),
            result_ttl_s=self._settings.result_ttl_s,
        )
        log.error("run %s failed: %s", run_id, error)
        self._event(run_id, request, "failed", {"error": error}, epoch=fence.epoch)
