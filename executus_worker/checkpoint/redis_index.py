"""RedisStore operations that read the run indexes: the recovery sweep, its audit, ``list_runs``.

The sweep reads only what is due (the recovery index, ``store.py``): one pipelined
``ZRANGEBYSCORE ... LIMIT`` on ``runs:due`` and ``runs:waiting``, then one pipelined round trip
of per-run compare-and-set scripts for those runs only. A healthy run (a live, renewed lease, a
queued run inside its timeout) is never read, so a sweep that finds nothing costs two index
range reads whatever the number of active runs. No script decodes a request, and each one is a
few O(1) commands, so Redis, which serves pipelined commands a read buffer at a time, is never
held for more than a fraction of a millisecond by a sweep.

Nothing here ever scans the keyspace.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from executus_worker.checkpoint import codec, resp, scripts
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.store import IndexAudit, Requeued, SweepBatch
from executus_worker.core.models import RunRecord, RunStatus
from executus_worker.errors import CorruptCheckpointError, StoreError

log = logging.getLogger(__name__)

_REQUEUE = scripts.WITH_LIB["requeue"]
_AUDIT = scripts.WITH_LIB["audit"]
_REQUEUE_SHA = hashlib.sha1(_REQUEUE.encode(), usedforsecurity=False).hexdigest()
_AUDIT_SHA = hashlib.sha1(_AUDIT.encode(), usedforsecurity=False).hexdigest()


def sweep(
    client: redis.Redis,
    keys: KeySchema,
    *,
    now: float,
    queued_timeout_s: float,
    batch: int,
    backlogged: Callable[[str], bool] | None,
) -> SweepBatch:
    """One batch of due runs: up to ``batch`` from each index, each through REQUEUE."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    try:
        pipe = client.pipeline(transaction=False)
        pipe.zrangebyscore(keys.due, "-inf", now, start=0, num=batch)
        pipe.zrangebyscore(keys.waiting, "-inf", now - queued_timeout_s, start=0, num=batch)
        raw_due, raw_waiting = pipe.execute()
        due = [codec.text(i) for i in raw_due]
        waiting = [codec.text(i) for i in raw_waiting]
        if not due and not waiting:
            return SweepBatch(requeued=[], errors=[], scanned=0)
        flags = _backlog_flags(client, keys, waiting, backlogged)
        seen = set(due)
        ids = due + [i for i in waiting if i not in seen]
        replies = _requeue_all(
            client, keys, ids, now=now, queued_timeout_s=queued_timeout_s, flags=flags
        )
    except redis.RedisError as exc:
        raise StoreError(f"redis sweep of {keys.due} / {keys.waiting} failed: {exc}") from exc

    requeued: list[Requeued] = []
    errors: list[tuple[str, str]] = []
    deferred = failed = 0
    for run_id, reply in zip(ids, replies, strict=True):
        if isinstance(reply, Exception):
            failed += 1
            errors.append((run_id, f"sweep script failed: {reply}"))
            continue
        raw = reply.encode() if isinstance(reply, str) else bytes(reply)
        kind, _, rest = raw.partition(b" ")
        if kind == b"requeued":
            requeued.append(_requeued(run_id, rest))
        elif kind == b"deferred":
            deferred += 1
        elif kind == b"removed":
            errors.append((run_id, f"removed from the run indexes: {rest.decode()}"))
        elif kind == b"bad":
            errors.append((run_id, f"skipped unreadable record: {rest.decode()}"))
    # A full page may have more behind it; but if no script ran, the same runs would come
    # back: stop rather than loop (the errors say why).
    more = (len(due) == batch or len(waiting) == batch) and failed < len(ids)
    return SweepBatch(requeued, errors, scanned=len(ids), deferred=deferred, more=more)


def _requeued(run_id: str, rest: bytes) -> Requeued:
    """'<previous status> <len(queue)> <queue><request json>' (REQUEUE's reply) -> Requeued."""
    previous, size, tail = rest.split(b" ", 2)
    cut = int(size)
    return Requeued(
        run_id=run_id,
        queue=tail[:cut].decode(),
        # Bytes that are not UTF-8 still go out (replaced): the worker that gets the message
        # fails the run with the reason, rather than recovery looping on it.
        request_json=tail[cut:].decode(errors="replace"),
        previous_status=RunStatus(previous.decode()),
    )


def _backlog_flags(
    client: redis.Redis,
    keys: KeySchema,
    waiting: Sequence[str],
    backlogged: Callable[[str], bool] | None,
) -> dict[str, str]:
    """'1' for each due queued run whose broker queue holds messages. The queue names cost a
    pipelined HGET per due queued run (no request is read); the callable is asked per queue."""
    if not waiting or backlogged is None:
        return {}
    pipe = client.pipeline(transaction=False)
    for run_id in waiting:
        pipe.hget(keys.rec(run_id), "queue")
    queues = pipe.execute(raise_on_error=False)
    answers: dict[str, bool] = {}
    flags: dict[str, str] = {}
    for run_id, raw in zip(waiting, queues, strict=True):
        if isinstance(raw, bytes | str):
            queue = codec.text(raw)
            if queue not in answers:
                answers[queue] = backlogged(queue)
            if answers[queue]:
                flags[run_id] = "1"
    return flags


def _requeue_all(
    client: redis.Redis,
    keys: KeySchema,
    ids: Sequence[str],
    *,
    now: float,
    queued_timeout_s: float,
    flags: dict[str, str],
) -> list[Any]:
    """REQUEUE for every id in one round trip; per-run failures stay in their slot. Packed by
    hand (resp.py): all but the run's own keys and id are encoded once per batch."""
    bulk = resp.bulk
    head = b"*12\r\n" + bulk(b"EVALSHA") + bulk(_REQUEUE_SHA.encode()) + bulk(b"5")
    shared = b"".join(bulk(x.encode()) for x in (keys.active, keys.due, keys.waiting))
    tail = bulk(repr(float(now)).encode()) + bulk(repr(float(queued_timeout_s)).encode())
    flag = {"0": bulk(b"0"), "1": bulk(b"1")}

    def send(targets: Sequence[str]) -> list[Any]:
        parts: list[bytes] = []
        for run_id in targets:
            base = keys.run_base(run_id).encode()
            parts += (
                head, bulk(base + b":rec"), bulk(base + b":lease"), shared,
                bulk(run_id.encode()), tail, flag[flags.get(run_id, "0")],
            )  # fmt: skip
        return resp.send_packed(client, b"".join(parts), len(targets))

    replies = send(ids)
    missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing:
        # A restarted Redis forgot the script: load it, then run the calls that did not run.
        client.script_load(_REQUEUE)
        for i, reply in zip(missing, send([ids[i] for i in missing]), strict=True):
            replies[i] = reply
    return replies


def audit_index(client: redis.Redis, keys: KeySchema, *, now: float, limit: int) -> IndexAudit:
    """See ``RunStore.audit_index``. Each AUDIT call is one short script over ``limit`` ids."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    try:
        pipe = client.pipeline(transaction=False)
        for key in (keys.active, keys.due, keys.waiting):
            pipe.zcard(key)
        active, due, waiting = (int(n) for n in pipe.execute())
        # Fewer index entries than active runs: some run is invisible to the sweep. Check them
        # all now (an upgrade from an older version, lost writes) instead of one slice a sweep.
        full = due + waiting < active
        checked = added = 0
        args: list[str | float] = [keys.active, keys.due, keys.waiting, keys.audit, now, limit]
        # Full: round the whole index once from wherever the cursor stands (the bound stops a
        # pass that races an index growing faster than it walks).
        for _ in range(active // limit + 2 if full else 1):
            try:
                reply = client.evalsha(_AUDIT_SHA, 4, *args)
            except redis.exceptions.NoScriptError:
                client.script_load(_AUDIT)
                reply = client.evalsha(_AUDIT_SHA, 4, *args)
            checked += int(reply[0])
            added += int(reply[1])
            if checked >= active:
                break
    except redis.RedisError as exc:
        raise StoreError(f"redis audit of {keys.active} failed: {exc}") from exc
    return IndexAudit(checked=checked, added=added)


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
