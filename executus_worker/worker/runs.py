"""What ``executus.run`` does with one delivery, free of Celery so it is testable in-process.

    validate the message  ->  register if unknown  ->  claim  ->  resolve the agent
        ->  heartbeat + execute (the executor records how the attempt ended)  ->  return

The worker never crashes or loops on a delivery: every path returns normally, so Celery acks.
A delivery the claim refuses is a duplicate (broker redelivery, a second sweep, a message
published three times) and costs one round trip. Nothing is retried here: a crashed attempt
leaves its lease to expire, and the recovery sweep re-publishes the run (the store's claim
counts attempts and declares the run dead past ``max_recovery_attempts``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from executus_worker.checkpoint.store import ClaimStatus, RunStore
from executus_worker.core.models import (
    AgentName,
    OutcomeKind,
    RunId,
    RunInfo,
    RunOutcome,
    RunRequest,
)
from executus_worker.core.models import RunStatus as Status
from executus_worker.core.ports import Agent, Deps
from executus_worker.core.stop import StopToken
from executus_worker.errors import PayloadError, UnknownAgentError
from executus_worker.settings import Settings
from executus_worker.worker.heartbeat import Heartbeat

log = logging.getLogger(__name__)

_RUN_ID: TypeAdapter[str] = TypeAdapter(RunId)
_AGENT: TypeAdapter[str] = TypeAdapter(AgentName)
# A record needs *some* agent name even when the request that named it was unreadable.
_UNREADABLE_AGENT = "invalid"

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
    epoch: int
    attempts: int
    request: RunRequest | None


def default_owner() -> str:
    # Computed per delivery: a prefork child has its own pid, and the owner names the process.
    return f"{socket.gethostname()}:{os.getpid()}"


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
        heartbeat_interval_s: float | None = None,
    ) -> None:
        self._store = store
        self._agents = agents
        self._deps = deps
        self._settings = settings
        self._drain = drain
        self._execute = execute
        self._owner = owner
        self._clock = clock
        self._heartbeat_interval_s = heartbeat_interval_s
        # Per-process tallies (duplicates above all): logged, and handy in tests and `inspect`.
        self.counts: collections.Counter[str] = collections.Counter()

    def handle(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], *, task_id: str | None = None
    ) -> Handled:
        result = self._handle(args, kwargs, task_id)
        self.counts[result.action] += 1
        return result

    # -- validation ------------------------------------------------------------------------

    def _handle(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], task_id: str | None
    ) -> Handled:
        raw_run_id, raw_request, shape_error = _split(args, kwargs)
        run_id = _valid_run_id(raw_run_id)
        if shape_error is None and raw_run_id is not None and run_id is None:
            shape_error = f"invalid run id {str(raw_run_id)[:80]!r}"
        try:
            if shape_error is not None:
                raise PayloadError(shape_error)
            request = _parse_request(raw_request, self._settings.max_payload_bytes)
            if run_id is not None and request.run_id not in {None, run_id}:
                raise PayloadError(f"run id {run_id!r} does not match the request's")
        except PayloadError as exc:
            return self._reject(run_id, str(exc), raw_request)
        # A raw send_task without any run id: the task id is stable across redeliveries.
        run_id = run_id or request.run_id or _valid_run_id(task_id)
        if run_id is None:
            return self._reject(None, "no run id", raw_request)
        return self._run(run_id, request)

    def _reject(self, run_id: str | None, error: str, raw_request: object) -> Handled:
        """A payload we cannot run: fail its run if it names one, else log and drop it."""
        if run_id is None:
            log.error("dropped an executus.run message without a usable run id: %s", error)
            return Handled("rejected", None, detail=error)
        log.error("run %s: unacceptable message: %s", run_id, error)
        if self._store.get(run_id) is None:
            placeholder = RunRequest(run_id=run_id, agent=_agent_name(raw_request))
            self._store.register(
                placeholder, run_id=run_id, queue=self._settings.default_queue, now=self._clock()
            )
        claimed = self._claim(run_id)
        if isinstance(claimed, Handled):
            return claimed
        self._fail(run_id, claimed.epoch, error)
        return Handled("failed", run_id, OutcomeKind.FAILED, error)

    # -- execution -------------------------------------------------------------------------

    def _run(self, run_id: str, request: RunRequest) -> Handled:
        if self._store.get(run_id) is None:
            # Registered by our client before publishing; a raw send_task from another
            # service is registered here, on first sight (see executus_worker.client).
            self._store.register(
                request,
                run_id=run_id,
                queue=self._settings.queue_for(request.model_tier),
                now=self._clock(),
            )
        claimed = self._claim(run_id)
        if isinstance(claimed, Handled):
            return claimed
        # The record, not the message, is the truth: a stale duplicate carries an old request.
        if claimed.request is not None:
            request = claimed.request
        epoch, owner = claimed.epoch, claimed.owner
        try:
            agent = self._agents.get(request.agent)
        except UnknownAgentError as exc:
            self._fail(run_id, epoch, str(exc))
            return Handled("failed", run_id, OutcomeKind.FAILED, str(exc))
        run = RunInfo.from_request(request, run_id=run_id, epoch=epoch, attempt=claimed.attempts)
        token = StopToken(parents=[self._drain])
        heartbeat = Heartbeat(
            self._store,
            run_id=run_id,
            owner=owner,
            epoch=epoch,
            lease_ttl_s=self._settings.lease_ttl_s,
            stop=token,
            interval_s=self._heartbeat_interval_s,
        )
        log.info(
            "run %s: attempt %d (epoch %d) of %s started", run_id, run.attempt, epoch, agent.name
        )
        try:
            with heartbeat:
                outcome = self._execute(agent, run, self._deps, token)
        except Exception as exc:
            # The executor records every ending itself; reaching here is a bug or a dead store.
            # The lease expires and the sweep re-publishes the run (attempts are capped).
            log.exception("run %s: attempt crashed outside the executor's handling", run_id)
            return Handled("crashed", run_id, detail=f"{type(exc).__name__}: {exc}")
        return Handled("executed", run_id, outcome.kind, outcome.error or "")

    def _claim(self, run_id: str) -> _Claimed | Handled:
        """Claim the run: what this delivery now owns, or why it owns nothing."""
        owner = self._owner()
        claim = self._store.claim(
            run_id,
            owner=owner,
            lease_ttl_s=self._settings.lease_ttl_s,
            max_attempts=self._settings.max_recovery_attempts,
            now=self._clock(),
        )
        if claim.status is ClaimStatus.CLAIMED:
            request = claim.record.request if claim.record else None
            return _Claimed(owner, claim.epoch, claim.attempts, request)
        if claim.status in {ClaimStatus.BUSY, ClaimStatus.GONE}:
            log.info("run %s: duplicate delivery ignored (%s)", run_id, claim.status.value)
            return Handled("duplicate", run_id, detail=claim.status.value)
        if claim.status is ClaimStatus.CANCELLED:
            log.info("run %s: cancelled before it started", run_id)
            return Handled("cancelled", run_id, OutcomeKind.CANCELLED)
        error = claim.record.error if claim.record and claim.record.error else "too many attempts"
        log.error("run %s: dead after %d attempts: %s", run_id, claim.attempts, error)
        return Handled("dead", run_id, detail=error)

    def _fail(self, run_id: str, epoch: int, error: str) -> None:
        # Keep whatever transcript an earlier attempt left: the record shows what happened.
        kept = len(self._store.transcript(run_id))
        self._store.finish(
            run_id,
            epoch=epoch,
            status=Status.FAILED,
            output=None,
            error=error,
            base_len=kept,
            new_messages=[],
            now=self._clock(),
            result_ttl_s=self._settings.result_ttl_s,
        )
        log.error("run %s failed: %s", run_id, error)


# --------------------------------------------------------------------------- message parsing


def _split(args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[object, object, str | None]:
    """(run_id, request, shape error) from ``args=[run_id, request_json]`` (or kwargs of the
    same names, or a lone request whose ``run_id`` field names the run)."""
    unknown = sorted(set(kwargs) - {"run_id", "request"})
    if unknown or len(args) > 2:
        extra = unknown or [f"{len(args)} positional arguments"]
        return kwargs.get("run_id"), kwargs.get("request"), f"unexpected arguments: {extra}"
    if len(args) == 2:
        return args[0], args[1], None
    if len(args) == 1:
        if "request" in kwargs:
            return args[0], kwargs["request"], None
        return kwargs.get("run_id"), args[0], None
    return kwargs.get("run_id"), kwargs.get("request"), None


def _valid_run_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return _RUN_ID.validate_python(value)
    except ValidationError:
        return None


def _parse_request(raw: object, max_bytes: int) -> RunRequest:
    if raw is None:
        raise PayloadError("the message carries no run request")
    if not isinstance(raw, str | bytes | dict):
        raise PayloadError(f"the run request must be a JSON object, got {type(raw).__name__}")
    return RunRequest.parse(raw, max_bytes=max_bytes)


def _agent_name(raw_request: object) -> str:
    """The agent an unreadable request meant, if that much is readable (for the record)."""
    data: object = raw_request
    if isinstance(raw_request, str | bytes):
        try:
            data = json.loads(raw_request)
        except ValueError:
            return _UNREADABLE_AGENT
    name = data.get("agent") if isinstance(data, dict) else None
    try:
        return _AGENT.validate_python(name)
    except ValidationError:
        return _UNREADABLE_AGENT
