"""RedisStore operations that walk the run indexes: ``list_runs`` and the recovery sweep.

Both read the ``runs:active`` / ``runs:done`` sorted sets (never SCAN the keyspace) and send one
pipelined round trip per batch, not one per run: the sweep must find and requeue 10,000 runs in
well under a second, and publishing one message per round trip takes ~9 s here.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import redis
from redis.commands.core import Script

from executus_worker.checkpoint import codec
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.store import Requeued, SweepBatch
from executus_worker.core.models import RunRecord, RunStatus
from executus_worker.errors import CorruptCheckpointError, StoreError

log = logging.getLogger(__name__)


def sweep(
    client: redis.Redis,
    keys: KeySchema,
    requeue: Script,
    *,
    now: float,
    queued_timeout_s: float,
    cursor: int,
    batch: int,
) -> SweepBatch:
    """One page of the active index: a per-run compare-and-set for each id, pipelined.

    The index is walked by rank, so ids that the sweep itself removes shift the ranks behind
    them; the returned cursor accounts for those. Runs finished concurrently by workers can
    still shift a page boundary; a run skipped that way is seen by the next sweep.
    """
    try:
        raw_ids = cast("list[bytes]", client.zrange(keys.active, cursor, cursor + batch - 1))
        ids = [codec.text(i) for i in raw_ids]
        if not ids:
            return SweepBatch(requeued=[], errors=[], scanned=0, cursor=0)
        pipe = client.pipeline(transaction=False)
        for run_id in ids:
            rec, lease = keys.rec(run_id), keys.lease(run_id)
            requeue(
                keys=[rec, lease, keys.active], args=[run_id, now, queued_timeout_s], client=pipe
            )
        # One bad record must not stop the others: collect per-command errors instead.
        replies = pipe.execute(raise_on_error=False)
    except redis.RedisError as exc:
        raise StoreError(f"redis sweep of {keys.active} failed: {exc}") from exc

    requeued: list[Requeued] = []
    errors: list[tuple[str, str]] = []
    removed = 0
    for run_id, reply in zip(ids, replies, strict=True):
        if isinstance(reply, Exception):
            errors.append((run_id, f"sweep script failed: {reply}"))
            continue
        kind = codec.text(reply[0])
        if kind == "requeued":
            try:
                request = codec.decode_request(run_id, keys.rec(run_id), reply[3])
            except CorruptCheckpointError as exc:
                errors.append((run_id, str(exc)))
                continue
            requeued.append(
                Requeued(
                    run_id=run_id,
                    queue=codec.text(reply[2]),
                    request=request,
                    previous_status=RunStatus(codec.text(reply[1])),
                )
            )
        elif kind == "removed":
            removed += 1
            errors.append((run_id, f"removed from {keys.active}: {codec.text(reply[1])}"))
        elif kind == "bad":
            errors.append((run_id, f"skipped unreadable record: {codec.text(reply[1])}"))
    next_cursor = 0 if len(ids) < batch else cursor + len(ids) - removed
    return SweepBatch(requeued=requeued, errors=errors, scanned=len(ids), cursor=next_cursor)


def list_runs(
    client: redis.Redis, keys: KeySchema, *, status: RunStatus | None, limit: int
) -> list[RunRecord]:
    """Newest first. Expired and unreadable records are skipped (the latter logged)."""
    if limit <= 0:
        return []
    if status is None:
        indexes = [keys.active, keys.done]
    else:
        indexes = [keys.done if status.terminal else keys.active]
    found: list[RunRecord] = []
    try:
        for index in indexes:
            found.extend(_walk(client, keys, index, status, limit))
    except redis.RedisError as exc:
        raise StoreError(f"redis list_runs failed: {exc}") from exc
    if len(indexes) > 1:
        found.sort(key=lambda r: r.created_at, reverse=True)
    return found[:limit]


def _walk(
    client: redis.Redis, keys: KeySchema, index: str, status: RunStatus | None, limit: int
) -> list[RunRecord]:
    found: list[RunRecord] = []
    chunk = max(limit, 100)
    start = 0
    while len(found) < limit:
        raw_ids = cast("list[bytes]", client.zrevrange(index, start, start + chunk - 1))
        ids = [codec.text(i) for i in raw_ids]
        if not ids:
            break
        pipe = client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(keys.rec(run_id))
        raws: list[Any] = pipe.execute()
        for run_id, raw in zip(ids, raws, strict=True):
            if not raw:
                continue  # expired after its retention; the index entry is trimmed later
            try:
                record = codec.decode_record(run_id, keys.rec(run_id), raw)
            except CorruptCheckpointError as exc:
                log.warning("list_runs skipped a record: %s", exc)
                continue
            if status is None or record.status == status:
                found.append(record)
        if len(ids) < chunk:
            break
        start += chunk
    return found[:limit]
