"""Where each run is right now: its record plus the step, phase and lease time it is at.

The record says *who* (status, owner, epoch, attempts); the checkpoint meta says *how far*
(iteration, active phase); the lease key's TTL says *for how long* the owner's claim still
holds. All three for any number of runs come back in one pipelined round trip, reading only
the small keys -- never a transcript -- so a live view can poll it twice a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from executus_worker.checkpoint.codec import decode_record, text
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.core.models import Message, RunRecord
from executus_worker.errors import CorruptCheckpointError
from executus_worker.redis_connect import StateClient

_META_FIELDS = ("iteration", "active_phase", "completed_phases")


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    record: RunRecord | None  # None: the record does not decode (``problem`` says why)
    iteration: int | None = None  # steps checkpointed; None without a checkpoint
    phase: str | None = None
    completed_phases: tuple[str, ...] = ()
    lease_left_s: float | None = None  # None: nobody holds a lease on the run
    problem: str | None = None


def read_progress(
    client: StateClient, keys: KeySchema, run_ids: Sequence[str]
) -> list[RunProgress]:
    """Progress of each run that still has a record, in the order given (unknown ids left out)."""
    pipe = client.pipeline(transaction=False)
    for run_id in run_ids:
        run = keys.run(run_id)
        pipe.hgetall(run.rec)
        pipe.hmget(run.ckpt, list(_META_FIELDS))
        pipe.pttl(run.lease)
    replies = pipe.execute()
    found = []
    for i, run_id in enumerate(run_ids):
        raw_record, meta, lease_ms = replies[3 * i : 3 * i + 3]
        if raw_record:
            found.append(_progress(run_id, keys, raw_record, meta, lease_ms))
    return found


def _progress(
    run_id: str, keys: KeySchema, raw_record: dict[bytes, bytes], meta: list[bytes | None],
    lease_ms: int,
) -> RunProgress:  # fmt: skip
    lease_left_s = lease_ms / 1000 if lease_ms >= 0 else None
    try:
        record = decode_record(run_id, keys.rec(run_id), raw_record)
    except CorruptCheckpointError as exc:
        return RunProgress(run_id, None, lease_left_s=lease_left_s, problem=str(exc))
    iteration_raw, phase_raw, completed_raw = meta
    try:
        iteration = int(text(iteration_raw)) if iteration_raw is not None else None
        phase = json.loads(phase_raw) if phase_raw is not None else None
        completed = tuple(json.loads(completed_raw)) if completed_raw is not None else ()
    except ValueError as exc:
        problem = f"unreadable checkpoint meta at {keys.ckpt(run_id)}: {exc}"
        return RunProgress(run_id, record, lease_left_s=lease_left_s, problem=problem)
    return RunProgress(
        run_id,
        record,
        iteration=iteration,
        phase=phase if isinstance(phase, str) else None,
        completed_phases=tuple(str(p) for p in completed),
        lease_left_s=lease_left_s,
    )


def with_final_steps(
    runs: Sequence[RunProgress], cache: dict[str, int], transcript: Callable[[str], list[Message]]
) -> list[RunProgress]:
    """Finished runs have no checkpoint left to say how far they got: count the assistant
    messages (one per model step) of the transcript kept after the end, once per run."""
    out = []
    for run in runs:
        if run.iteration is None and run.record is not None and run.record.status.terminal:
            if run.run_id not in cache:
                messages = transcript(run.run_id)
                cache[run.run_id] = sum(1 for m in messages if m.role == "assistant")
            out.append(replace(run, iteration=cache[run.run_id]))
        else:
            out.append(run)
    return out
