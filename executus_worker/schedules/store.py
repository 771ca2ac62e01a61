"""Schedule state in Redis: dynamic jobs, pauses and each job's fire reservation.

    <prefix>:sched:jobs          hash    job name -> JobSpec JSON (jobs added at runtime)
    <prefix>:sched:paused        set     paused job names (file jobs can be paused too)
    <prefix>:sched:state:<name>  hash    the job's reservation and what its last fire did
    <prefix>:sched:sweep         string  beat's recovery-sweep throttle (SET NX PX)

Nothing lives in a local file, so any number of beat processes share one schedule and a
restarted beat continues where the last one stopped. The state hash is only ever changed by a
compare-and-set script, so of several beats racing for the same fire exactly one wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import redis
from pydantic import ValidationError

from executus_worker.errors import StoreError
from executus_worker.schedules.model import JobSource, JobSpec
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


@dataclass(frozen=True)
class ScheduleKeys:
    prefix: str = "executus"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}:sched:jobs"

    @property
    def paused(self) -> str:
        return f"{self.prefix}:sched:paused"

    @property
    def sweep(self) -> str:
        return f"{self.prefix}:sched:sweep"

    def state(self, name: str) -> str:
        return f"{self.prefix}:sched:state:{name}"


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
    last_outcome: str = ""  # reserved | enqueued | duplicate | enqueue_failed | skipped_*
    last_error: str = ""
    missed_from: str = ""  # oldest fire of the last batch dropped by the catch-up window
    invalid: str = ""  # why the job cannot fire; shown by `schedules ls`
    fires: int = 0
    enqueue_failures: int = 0
    updated_at: float = 0.0

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
            elif spec.name == "updated_at":
                kwargs[spec.name] = float(value or 0)
            else:
                kwargs[spec.name] = value
        return cls(**kwargs)


_INT_FIELDS = frozenset({"fires", "enqueue_failures"})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ScheduleStore:
    """Dynamic jobs, pauses and fire reservations for one key prefix."""

    def __init__(self, client: redis.Redis, *, key_prefix: str = "executus") -> None:
        self._client = client
        self.keys = ScheduleKeys(key_prefix)
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
