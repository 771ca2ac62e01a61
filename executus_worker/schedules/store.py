"""Schedule state in Redis: dynamic jobs, pauses and each job's fire reservation.

    <prefix>:sched:jobs          hash    job name -> JobSpec JSON (jobs added at runtime)
    <prefix>:sched:paused        set     paused job names (file jobs can be paused too)
    <prefix>:sched:state:<name>  hash    the job's reservation and what its last fire did
    <prefix>:sched:sweep         string  beat's recovery-sweep throttle (SET NX PX)

On Redis Cluster the same names carry the hash tag {<prefix>:sched} (``ScheduleKeys``).

Nothing lives in a local file, so any number of beat processes share one schedule and a
restarted beat continues where the last one stopped. The state hash is only ever changed by a
compare-and-set script, so of several beats racing for the same fire exactly one wins.

State rows expire (``STATE_TTL_S``) unless a beat keeps them: beats refresh the rows of the
jobs they schedule, so the row of a job deleted from the schedule file goes away by itself.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from pydantic import ValidationError
from redis.cluster import RedisCluster

from executus_worker.errors import StoreError
from executus_worker.redis_connect import StateClient
from executus_worker.schedules.model import MAX_CATCHUP_WINDOW_S, JobSource, JobSpec
from executus_worker.schedules.source_toml import JobProblem, validation_problems

# KEYS[1] = state hash. ARGV = n, then n (field, expected) pairs, where '' means absent;
# then m, m (field, value) pairs to set; then k, k (field, increment) pairs. Returns 1 if the
# expectations held and the writes were made, 0 otherwise (nothing written).
_CAS_LUA = """
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  local current = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if current ~= ARGV[i + 1] then return 0 end
  i = i + 2
end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2 end
return 1
"""


# Longer than any catch-up window, so a row only expires when no beat has scheduled its job
# for longer than the job could ever catch up: the job is gone (or every beat was down that
# long, and then it restarts from the next fire, which is what the window would do anyway).
STATE_TTL_S = int(MAX_CATCHUP_WINDOW_S) + 86_400


class FireOutcome(enum.StrEnum):
    """What happened to a job's last reserved fire (``JobState.last_outcome``)."""

    RESERVED = "reserved"  # reserved; its first enqueue attempt is in flight
    RETRYING = "retrying"  # a later attempt is in flight
    ENQUEUE_FAILED = "enqueue_failed"  # the last attempt failed; retried from retry_at
    ENQUEUED = "enqueued"  # registered and published by this fire
    DUPLICATE = "duplicate"  # the run already existed (an earlier attempt, another beat)
    PUBLISH_FAILED = "publish_failed"  # registered, message not sent: the sweep re-publishes
    REJECTED = "rejected"  # the request cannot be accepted (too large): never retried
    MISSED = "missed"  # never enqueued: its catch-up window passed or a newer fire replaced it
    SKIPPED_OVERLAP = "skipped_overlap"  # overlap=skip and the previous run still active


# A fire in one of these states is owed a run: some beat retries it until it is enqueued or
# its catch-up window passes.
PENDING_OUTCOMES = frozenset(
    {FireOutcome.RESERVED, FireOutcome.RETRYING, FireOutcome.ENQUEUE_FAILED}
)
IN_FLIGHT_OUTCOMES = frozenset({FireOutcome.RESERVED, FireOutcome.RETRYING})


@dataclass(frozen=True)
class ScheduleKeys:
    """``<prefix>:sched:*``; on Redis Cluster ``<prefix>:{<prefix>:sched}:*``: one slot for
    all of them, so removing a job (jobs, its state row and its pause flag in one MULTI) stays
    a same-slot transaction. Schedule traffic is a few commands per tick: one slot is plenty."""

    prefix: str = "executus"
    cluster: bool = False

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.prefix}:sched}}" if self.cluster else f"{self.prefix}:sched"

    @property
    def jobs(self) -> str:
        return f"{self.base}:jobs"

    @property
    def paused(self) -> str:
        return f"{self.base}:paused"

    @property
    def sweep(self) -> str:
        return f"{self.base}:sweep"

    def state(self, name: str) -> str:
        return f"{self.base}:state:{name}"


@dataclass(frozen=True)
class JobState:
    """A job's row in ``<prefix>:sched:state:<name>``; '' means never set.

    Fire times are the canonical ``YYYY-MM-DDTHH:MM:SSZ`` text, so the compare-and-set
    compares exactly what every beat writes.
    """

    schedule_key: str = ""  # cron|timezone the reservation was computed for
    next_fire: str = ""  # the reservation: the next nominal fire
    last_fire: str = ""  # the last fire this job reserved for enqueueing
    last_run_id: str = ""
    last_outcome: str = ""  # a FireOutcome value
    last_error: str = ""
    attempts: int = 0  # enqueue attempts made for last_fire
    # While an attempt is in flight: when other beats may assume it died and take over.
    # After a failed attempt: when the next one is due.
    retry_at: float = 0.0
    missed_from: str = ""  # oldest fire of the last batch dropped by the catch-up window
    invalid: str = ""  # why the job cannot fire; shown by `schedules ls`
    fires: int = 0
    enqueue_failures: int = 0  # failed attempts (each retried while the window allows)
    missed_fires: int = 0  # reserved fires that were never enqueued
    updated_at: float = 0.0

    @property
    def pending(self) -> bool:
        """``last_fire`` was reserved and is not enqueued yet."""
        return self.last_outcome in PENDING_OUTCOMES and bool(self.last_run_id and self.last_fire)

    def in_flight(self, now_ts: float) -> bool:
        """A beat is attempting the pending fire and may still report back."""
        return self.last_outcome in IN_FLIGHT_OUTCOMES and self.retry_at > now_ts

    def attempt_guard(self) -> dict[str, str]:
        """The compare-and-set expectations that pin this exact attempt of this fire."""
        return {
            "last_run_id": self.last_run_id,
            "attempts": str(self.attempts) if self.attempts else "",
            "last_outcome": self.last_outcome,
        }

    @classmethod
    def from_hash(cls, raw: Mapping[bytes | str, bytes | str]) -> JobState:
        values = {_text(k): _text(v) for k, v in raw.items()}
        kwargs: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in values:
                continue
            value = values[spec.name]
            if spec.name in _INT_FIELDS:
                kwargs[spec.name] = int(value or 0)
            elif spec.name in _FLOAT_FIELDS:
                kwargs[spec.name] = float(value or 0)
            else:
                kwargs[spec.name] = value
        return cls(**kwargs)


_INT_FIELDS = frozenset({"fires", "enqueue_failures", "missed_fires", "attempts"})
_FLOAT_FIELDS = frozenset({"retry_at", "updated_at"})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ScheduleStore:
    """Dynamic jobs, pauses and fire reservations for one key prefix."""

    def __init__(self, client: StateClient, *, key_prefix: str = "executus") -> None:
        self._client = client
        self.keys = ScheduleKeys(key_prefix, cluster=isinstance(client, RedisCluster))
        self._cas = client.register_script(_CAS_LUA)

    # -- dynamic jobs ------------------------------------------------------------------

    def add_job(self, spec: JobSpec, *, replace: bool = False) -> bool:
        """Store a runtime job; False (unchanged) if the name exists and not ``replace``."""
        payload = spec.model_dump_json()
        if replace:
            self._client.hset(self.keys.jobs, spec.name, payload)
            return True
        return bool(self._client.hsetnx(self.keys.jobs, spec.name, payload))

    def remove_job(self, name: str) -> bool:
        """Delete a runtime job with its state and pause flag; False if there was none."""
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(self.keys.jobs, name)
        pipe.delete(self.keys.state(name))
        pipe.srem(self.keys.paused, name)
        removed, _, _ = pipe.execute()
        return bool(removed)

    def get_job(self, name: str) -> JobSpec | None:
        raw = self._client.hget(self.keys.jobs, name)
        return None if raw is None else JobSpec.model_validate_json(raw)

    def load_jobs(self) -> tuple[list[JobSpec], list[JobProblem]]:
        """Every runtime job; one that no longer validates is a problem, not an exception."""
        jobs: list[JobSpec] = []
        problems: list[JobProblem] = []
        for raw_name, raw in sorted(self._client.hgetall(self.keys.jobs).items()):
            name = _text(raw_name)
            try:
                spec = JobSpec.model_validate_json(raw)
            except ValidationError as exc:
                error = "; ".join(validation_problems(exc, where=f"redis job {name}"))
                problems.append(JobProblem(name, JobSource.REDIS, error))
                continue
            if spec.name != name:
                error = f"redis job {name}: stored spec is named {spec.name!r}"
                problems.append(JobProblem(name, JobSource.REDIS, error))
                continue
            jobs.append(spec)
        return jobs, problems

    # -- pause -------------------------------------------------------------------------

    def pause(self, name: str) -> bool:
        """True if the job was not paused before."""
        return bool(self._client.sadd(self.keys.paused, name))

    def resume(self, name: str) -> bool:
        """True if the job was paused before."""
        return bool(self._client.srem(self.keys.paused, name))

    def paused(self) -> set[str]:
        return {_text(member) for member in self._client.smembers(self.keys.paused)}

    # -- state -------------------------------------------------------------------------

    def state(self, name: str) -> JobState:
        return JobState.from_hash(self._client.hgetall(self.keys.state(name)))

    def states(self, names: Iterable[str]) -> dict[str, JobState]:
        ordered = list(names)
        pipe = self._client.pipeline(transaction=False)
        for name in ordered:
            pipe.hgetall(self.keys.state(name))
        return {
            name: JobState.from_hash(raw) for name, raw in zip(ordered, pipe.execute(), strict=True)
        }

    def compare_and_set(
        self,
        name: str,
        *,
        expect: Mapping[str, str],
        values: Mapping[str, str | float],
        increments: Mapping[str, int] | None = None,
    ) -> bool:
        """Write ``values`` (and add ``increments``) only if every ``expect`` field holds."""
        args: list[str | int | float] = [len(expect)]
        for key, value in expect.items():
            args += [key, value]
        args.append(len(values))
        for key, set_value in values.items():
            args += [key, set_value]
        bumps = increments or {}
        args.append(len(bumps))
        for key, amount in bumps.items():
            args += [key, amount]
        result = self._cas(keys=[self.keys.state(name)], args=args)
        if result not in (0, 1):
            raise StoreError(f"schedule state script returned {result!r}")
        return bool(result)

    def delete_state(self, name: str) -> None:
        self._client.delete(self.keys.state(name))

    # -- retention ---------------------------------------------------------------------

    def keep_states(self, names: Iterable[str], *, ttl_s: int = STATE_TTL_S) -> set[str]:
        """Push the expiry of these jobs' rows ``ttl_s`` out; the names whose row exists."""
        ordered = list(names)
        pipe = self._client.pipeline(transaction=False)
        for name in ordered:
            pipe.expire(self.keys.state(name), ttl_s)
        return {name for name, ok in zip(ordered, pipe.execute(), strict=True) if ok}

    def expire_unkept_states(
        self, cursor: int = 0, *, ttl_s: int = STATE_TTL_S, count: int = 1000
    ) -> tuple[int, int]:
        """One SCAN step over the state rows: give a row without an expiry one (rows written
        before rows expired). Returns the next cursor (0 when done) and how many were set.

        A SCAN step is bounded work, so callers spread a pass over many ticks.
        """
        if isinstance(self._client, RedisCluster):
            # Rows without an expiry were written by versions from before Redis Cluster was
            # supported, never on a cluster: nothing to upgrade there.
            return 0, 0
        next_cursor, keys = self._client.scan(cursor, match=self.keys.state("*"), count=count)
        if not keys:
            return int(next_cursor), 0
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        persistent = [key for key, ttl in zip(keys, pipe.execute(), strict=True) if ttl == -1]
        for key in persistent:
            pipe.expire(key, ttl_s)
        pipe.execute()
        return int(next_cursor), len(persistent)
