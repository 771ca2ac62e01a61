"""``Client``: enqueue, inspect, wait for and cancel runs; manage schedules (see the package)."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import redis
from pydantic import JsonValue, ValidationError

from executus_worker.broker_publish import CeleryPublisher
from executus_worker.checkpoint.events import RedisEventLog, RunEvent
from executus_worker.checkpoint.layout import check_layout
from executus_worker.checkpoint.redis_store import EnqueuedEvent, RedisStore
from executus_worker.checkpoint.spend import RedisSpendLedger
from executus_worker.checkpoint.store import RunStore
from executus_worker.client.events import iter_events
from executus_worker.client.idempotency import request_differences
from executus_worker.client.ports import EnqueueResult, Publisher, WaitTimeout
from executus_worker.client.progress import RunProgress, read_progress
from executus_worker.core.models import Message, RunLimits, RunRecord, RunRequest, RunStatus
from executus_worker.errors import (
    ConfigError,
    PayloadError,
    PublishError,
    RunConflictError,
    RunNotFoundError,
    ScheduleError,
    StoreError,
    UnknownAgentError,
)
from executus_worker.fleet.directory import AgentDirectory, Directory
from executus_worker.publish import BatchPublisher, RunMessage
from executus_worker.redis_connect import StateClient, connect_state
from executus_worker.schedules.admin import JobView, ScheduleAdmin
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.source_toml import validation_problems
from executus_worker.schedules.store import ScheduleStore
from executus_worker.settings import Settings

_SERVED_CACHE_S = 5.0
log = logging.getLogger(__name__)


class Client:
    """A producer-side handle on the run store and the broker. Not thread-safe to close."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: RunStore | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._publisher = publisher
        self._redis: StateClient | None = None
        self._layout_checked = False
        self._admin: ScheduleAdmin | None = None
        # (agent, queue) -> monotonic time until which a live worker was seen serving it.
        self._served: dict[tuple[str, str], float] = {}
        self._events: RedisEventLog | None = None

    @classmethod
    def from_url(
        cls,
        redis_url: str,
        *,
        key_prefix: str | None = None,
        broker_url: str | None = None,
        settings: Settings | None = None,
    ) -> Client:
        """A client for ``redis_url``; the broker defaults to the same Redis.

        Does not read the environment: other settings come from ``settings`` when given,
        else the library defaults. ``key_prefix`` defaults to ``settings.key_prefix`` (or
        ``"executus"``) and must match the workers' ``EXECUTUS_KEY_PREFIX``.
        """
        base = settings if settings is not None else Settings.model_construct()
        fields = base.model_dump()
        fields["redis_url"] = redis_url
        if key_prefix is not None:
            fields["key_prefix"] = key_prefix
        if broker_url is not None:
            fields["broker_url"] = broker_url
        # Every field is passed explicitly, so the environment cannot leak in; validating
        # here reports a bad URL or prefix now rather than on first use.
        try:
            return cls(Settings(**fields))
        except ValidationError as exc:
            # Only locations and messages: the rejected value may be a URL with a password.
            problems = "; ".join(_problem(err["loc"], err["msg"]) for err in exc.errors())
            raise ConfigError(f"invalid client settings: {problems}") from None

    # -- connections ---------------------------------------------------------------------

    def _client(self) -> StateClient:
        if self._redis is None:
            self._redis = connect_state(
                self.settings.redis_url, sentinel_master=self.settings.sentinel_master
            )
        return self._redis

    @property
    def store(self) -> RunStore:
        if self._store is None:
            self._store = RedisStore(
                self._client(),
                key_prefix=self.settings.key_prefix,
                result_ttl_s=self.settings.result_ttl_s,
                shards=self.settings.effective_redis_shards,
            )
        if not self._layout_checked and isinstance(self._store, RedisStore):
            # Once per client: runs registered under another EXECUTUS_REDIS_SHARDS than the
            # workers' would be invisible to their indexes (ConfigError names the setting).
            # Unreachable Redis: the operation itself reports that; check on the next one.
            with contextlib.suppress(StoreError):
                check_layout(self._store.client, self._store.keys, record=False)
                self._layout_checked = True
        return self._store

    @property
    def schedule_admin(self) -> ScheduleAdmin:
        """The schedules facade (``list()`` also reports a broken schedule file)."""
        if self._admin is None:
            self._admin = ScheduleAdmin(
                ScheduleStore(self._client(), key_prefix=self.settings.key_prefix),
                schedule_file=self.settings.schedule_file,
                runs=self.store,
            )
        return self._admin

    @property
    def directory(self) -> AgentDirectory:
        """The live workers' advertisements (which agents each serves, on which queues)."""
        s = self.settings
        return AgentDirectory(self._client(), key_prefix=s.key_prefix, ttl_s=s.worker_advert_ttl_s)

    def agents(self) -> Directory:
        """A snapshot of the live workers and the agents they serve."""
        return self.directory.read()

    @property
    def event_log(self) -> RedisEventLog:
        """The per-run event streams (what the audit battery writes)."""
        if self._events is None:
            s = self.settings
            self._events = RedisEventLog(
                self._client(),
                s.key_schema(),
                maxlen=s.audit_stream_maxlen,
                ttl_s=s.effective_audit_stream_ttl_s,
            )
        return self._events

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = CeleryPublisher(self.settings)
        return self._publisher

    def close(self) -> None:
        """Release Redis and broker connections. The client reconnects if used again."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()
        client, self._redis = self._redis, None
        if client is not None:
            # Both were built on this connection (an injected store is kept).
            self._admin = None
            self._events = None
            if isinstance(self._store, RedisStore):
                self._store = None
            client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- runs ----------------------------------------------------------------------------

    def enqueue(
        self,
        *,
        agent: str,
        input: Mapping[str, Any] | None = None,  # shadows the builtin: the public name in DESIGN.md
        run_id: str | None = None,
        guild_id: str | None = None,
        model_tier: str | None = None,
        metadata: Mapping[str, str] | None = None,
        limits: RunLimits | Mapping[str, Any] | None = None,
        allow_unknown_agent: bool = False,
    ) -> str:
        """Validate, register (status ``queued``) and publish a run; return its id.

        ``run_id`` defaults to a fresh uuid4 hex. An existing ``run_id`` enqueued with the same
        request returns at once and publishes nothing; with a different request it raises
        ``RunConflictError`` naming the differing fields (nothing changed, nothing sent).
        Raises ``PayloadError`` (nothing registered) for a request that is malformed,
        wrong-schema or over ``settings.max_payload_bytes``, and ``UnknownAgentError``
        (nothing registered) when no live worker serves ``agent`` on the run's queue --
        unless ``allow_unknown_agent`` (a deploy in progress) or
        ``settings.check_agents_on_enqueue`` is off.
        """
        payload: dict[str, Any] = {
            "run_id": run_id if run_id is not None else uuid.uuid4().hex,
            "agent": agent,
            "input": dict(input) if input is not None else {},
            "guild_id": guild_id,
            "model_tier": model_tier,
            "metadata": dict(metadata) if metadata is not None else {},
        }
        if limits is not None:
            payload["limits"] = (
                limits.model_dump() if isinstance(limits, RunLimits) else dict(limits)
            )
        return self.submit(payload, allow_unknown_agent=allow_unknown_agent).run_id

    def submit(
        self,
        request: RunRequest | Mapping[str, Any] | str | bytes,
        *,
        allow_unknown_agent: bool = False,
    ) -> EnqueueResult:
        """``enqueue`` for a whole request (a model, a dict or JSON), reporting what happened.

        A request without ``run_id`` gets a uuid4 hex one. ``created`` is False when the run
        already existed with this same request (then nothing was published);
        ``RunConflictError`` when it exists with a different one.
        """
        if isinstance(request, RunRequest):
            raw: dict[str, Any] | str | bytes = request.model_dump(mode="json")
        elif isinstance(request, Mapping):
            raw = dict(request)
        else:
            raw = request
        parsed = RunRequest.parse(raw, max_bytes=self.settings.max_payload_bytes)
        if parsed.run_id is None:
            # The id is part of the stored and published request, so workers and the record
            # agree on it; a hex uuid always satisfies the RunId pattern.
            parsed = parsed.model_copy(update={"run_id": uuid.uuid4().hex})
        run_id = parsed.run_id
        assert run_id is not None
        request_json = parsed.to_json()
        # The wire form spells out every default, so it can be larger than what the caller
        # passed; the worker applies the cap to these bytes, so the client must as well.
        size = len(request_json.encode())
        if size > self.settings.max_payload_bytes:
            raise PayloadError(
                f"run request is {size} bytes as sent, "
                f"over the {self.settings.max_payload_bytes}-byte limit"
            )
        queue = self.settings.queue_for(parsed.model_tier)
        if self.settings.check_agents_on_enqueue and not allow_unknown_agent:
            try:
                self.require_agent(parsed.agent, queue)
            except UnknownAgentError:
                # A retry of an enqueue that got through before its workers went away stays
                # idempotent (register below finds the run); only a new run is refused.
                if self.store.get(run_id) is None:
                    raise
        record, created, published = self._register(parsed, run_id, request_json, queue)
        if not created:
            # Registration is atomic, so the stored request is the first registrant's; a
            # retry of the same call (a producer's, a beat's) compares equal and passes.
            differing = request_differences(record.request, parsed)
            if differing:
                raise RunConflictError(run_id, differing)
            return EnqueueResult(record, created=False)
        if not published:
            try:
                self.publisher.publish(run_id, request_json, queue=queue)
            except (redis.RedisError, OSError) as exc:
                raise PublishError(run_id, str(exc)) from exc
        return EnqueueResult(record, created=True)

    def _register(
        self, parsed: RunRequest, run_id: str, request_json: str, queue: str
    ) -> tuple[RunRecord, bool, bool]:
        """Register the run and write its ``enqueued`` event: (record, created, published).

        On Redis one round trip: the register script also writes the event and, when the
        broker is this same Redis, pushes the message -- atomically, so a retry after any
        error is safe and no crash can leave the run registered without its message.
        """
        store = self.store
        event_data: dict[str, JsonValue] = {"agent": parsed.agent, "queue": queue}
        if not isinstance(store, RedisStore):
            record, created = store.register(parsed, run_id=run_id, queue=queue, now=time.time())
            if created:
                # Before the publish: a worker's "claimed" must never come first in the stream.
                self._event(run_id, "enqueued", event_data)
            return record, created, False
        inline = self._inline_publisher(store)
        push = inline.envelope(RunMessage(run_id, request_json, queue)) if inline else None
        event = None
        if self.settings.audit_stream:
            event = EnqueuedEvent(
                data_json=json.dumps(event_data, separators=(",", ":")),
                maxlen=self.settings.audit_stream_maxlen,
                ttl_ms=self.settings.effective_audit_stream_ttl_s * 1000,
            )
        record, created = store.register_enqueued(
            parsed, run_id=run_id, queue=queue, now=time.time(), event=event, push=push
        )
        return record, created, push is not None

    def _inline_publisher(self, store: RedisStore) -> BatchPublisher | None:
        publisher = self.publisher
        if isinstance(publisher, CeleryPublisher):
            return publisher.inline_target(store.client)
        return None

    def require_agent(self, agent: str, queue: str) -> None:
        """UnknownAgentError unless a live worker serves ``agent`` on ``queue``.

        A positive answer is remembered for a few seconds (far under the advertisement TTL),
        so a burst of enqueues reads the directory once; a negative one never is, so a worker
        that just started is seen at once.
        """
        key = (agent, queue)
        now = time.monotonic()
        if self._served.get(key, 0.0) > now:
            return
        self.agents().require(agent, queue)
        self._served[key] = now + min(_SERVED_CACHE_S, self.settings.worker_advert_ttl_s / 4)

    def status(self, run_id: str) -> RunRecord:
        """The run's record; ``RunNotFoundError`` if unknown or past its retention."""
        record = self.store.get(run_id)
        if record is None:
            raise RunNotFoundError(run_id)
        return record

    def transcript(self, run_id: str) -> list[Message]:
        """The latest checkpointed transcript, or the retained final one."""
        messages = self.store.transcript(run_id)
        if not messages:
            self.status(run_id)  # an unknown run is an error, not an empty transcript
        return messages

    def wait(
        self,
        run_id: str,
        timeout_s: float,
        *,
        poll_s: float = 0.05,
        max_poll_s: float = 1.0,
    ) -> RunRecord:
        """Poll until the run is terminal; return its record or raise ``WaitTimeout``.

        Polls start at ``poll_s`` and back off x1.5 up to ``max_poll_s``, so short runs are
        seen quickly and long waits cost about one GET per second.
        """
        deadline = time.monotonic() + timeout_s
        delay = poll_s
        while True:
            record = self.status(run_id)
            if record.status.terminal:
                return record
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(run_id, timeout_s, record)
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, max_poll_s)

    def progress(self, run_ids: Sequence[str]) -> list[RunProgress]:
        """Each run's record with its step, phase and lease time left (one round trip)."""
        return read_progress(self._client(), self.settings.key_schema(), run_ids)

    def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run: queued/interrupted runs end at once, a running one at its next step."""
        record = self.store.request_cancel(run_id, now=time.time())  # RunNotFoundError if unknown
        if record.status is RunStatus.CANCELLED:
            self._event(run_id, "cancelled", {"by": "client"})
        elif not record.status.terminal:
            self._event(run_id, "cancel_requested", {"status": record.status.value})
        return record

    def events(
        self,
        run_id: str,
        *,
        follow: bool = False,
        timeout_s: float | None = None,
        after: str = "0",
    ) -> Iterator[RunEvent]:
        """The run's events, oldest first (``RunEvent``: id, event, ts, data).

        ``follow=True`` keeps waiting for new events until the run has ended (or ``timeout_s``
        passed). ``after`` is a stream id to resume from. ``RunNotFoundError`` for an unknown
        run. Events expire ``audit_stream_ttl_s`` after the run's last one.
        """
        return iter_events(
            self.event_log, self.store, run_id, follow=follow, timeout_s=timeout_s, after=after
        )

    def spend(self, run_id: str) -> dict[str, float]:
        """Tokens and cost the run's model steps used across all its attempts
        (``input_tokens``, ``output_tokens``, ``tokens``, ``cost_usd``), as counted by the
        budget battery; ``{}`` when nothing was counted (no limit applied to the run and
        ``budget_track_all`` is off, or the counters expired with the run)."""
        return RedisSpendLedger(self._client(), self.settings.key_schema()).run_spend(run_id)

    def _event(self, run_id: str, event: str, data: dict[str, JsonValue]) -> None:
        if not self.settings.audit_stream:
            return
        try:
            self.event_log.append(run_id, event, data)
        except StoreError as exc:  # an observation: never worth failing the caller's call
            log.warning("run %s: %s event not written: %s", run_id, event, exc)

    def runs(self, status: RunStatus | str | None = None, limit: int = 100) -> list[RunRecord]:
        """Recent runs, optionally of one status (``ValueError`` for an unknown status)."""
        wanted = RunStatus(status) if status is not None else None
        return self.store.list_runs(status=wanted, limit=limit)

    # -- schedules (delegating to executus_worker.schedules) ------------------------------

    def add_schedule(
        self,
        job: JobSpec | Mapping[str, Any],
        *,
        replace: bool = False,
        allow_unknown_agent: bool = False,
    ) -> JobSpec:
        """Store a runtime cron job; beats pick it up on their next pass (no restart).

        ``ScheduleError`` for an invalid job, an existing name (unless ``replace``) or a name
        the schedule file owns; ``UnknownAgentError`` when no live worker serves its agent
        (as for ``enqueue``; fires themselves are never refused).
        """
        spec = job if isinstance(job, JobSpec) else _job_spec(job)
        if self.settings.check_agents_on_enqueue and not allow_unknown_agent:
            self.require_agent(spec.run.agent, self.settings.queue_for(spec.run.model_tier))
        self.schedule_admin.add(spec, replace=replace)
        return spec

    def remove_schedule(self, name: str) -> None:
        self.schedule_admin.remove(name)

    def schedules(self) -> list[JobView]:
        """Every job, from the schedule file and from Redis, with its next and last fire."""
        views, _file_error = self.schedule_admin.list()
        return views

    def pause_schedule(self, name: str) -> bool:
        """Pause a job (file jobs too); True if it was active before."""
        return self.schedule_admin.pause(name)

    def resume_schedule(self, name: str) -> bool:
        return self.schedule_admin.resume(name)


def _problem(loc: tuple[int | str, ...], msg: str) -> str:
    # A check across fields (retention vs visibility timeout) has no location.
    return f"{loc[0]}: {msg}" if loc else msg


def _job_spec(job: Mapping[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(dict(job))
    except ValidationError as exc:
        where = f"job {job.get('name', '?')}"
        raise ScheduleError("; ".join(validation_problems(exc, where=where))) from None
