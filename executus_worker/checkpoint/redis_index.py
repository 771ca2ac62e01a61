"""RedisStore operations that read the run indexes: the recovery sweep, its audit, ``list_runs``.

The indexes may be split into partitions (``keys.py``: one on plain Redis, 64 by default on
Redis Cluster); everything here walks all of them, a pipeline per step, which a cluster client
sends as one round trip per master (written to every master, then read).

The sweep reads only what is due (the recovery index, ``store.py``): one pipelined
``ZRANGEBYSCORE ... LIMIT`` on every partition's ``runs:due`` and ``runs:waiting`` (the batch
spread evenly over the partitions), then one pipelined round trip of per-run compare-and-set
scripts for those runs only. A healthy run (a live, renewed lease, a
queued run inside its timeout) is never read, so a sweep that finds nothing costs two index
range reads whatever the number of active runs. No script decodes a request, and each one is a
few O(1) commands, so Redis, which serves pipelined commands a read buffer at a time, is never
held for more than a fraction of a millisecond by a sweep.

Nothing here ever scans the keyspace.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from executus_worker.checkpoint import codec, resp, scripts
from executus_worker.checkpoint.keys import IndexKeys, KeySchema
from executus_worker.checkpoint.store import IndexAudit, Requeued, SweepBatch
from executus_worker.core.models import RunRecord, RunStatus
from executus_worker.errors import CorruptCheckpointError, StoreError
from executus_worker.redis_connect import StateClient

log = logging.getLogger(__name__)

# active_page's cursor: partition * _CURSOR_STRIDE + rank within that partition's runs:active.
_CURSOR_STRIDE = 1 << 40

_REQUEUE = scripts.WITH_LIB["requeue"]
_AUDIT = scripts.WITH_LIB["audit"]
_REQUEUE_SHA = hashlib.sha1(_REQUEUE.encode(), usedforsecurity=False).hexdigest()
_AUDIT_SHA = hashlib.sha1(_AUDIT.encode(), usedforsecurity=False).hexdigest()


def sweep(
    client: StateClient,
    keys: KeySchema,
    *,
    now: float,
    queued_timeout_s: float,
    batch: int,
    backlogged: Callable[[str], bool] | None,
) -> SweepBatch:
    """One batch of due runs: up to ``batch`` from each index (spread over the partitions, at
    least one per partition), each through REQUEUE."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    parts = keys.partitions()
    try:
        due, waiting, where, full = _due_pages(
            client, parts, now=now, queued_timeout_s=queued_timeout_s, batch=batch
        )
        if not due and not waiting:
            return SweepBatch(requeued=[], errors=[], scanned=0)
        flags = _backlog_flags(client, keys, waiting, backlogged)
        seen = set(due)
        ids = due + [i for i in waiting if i not in seen]
        replies = _requeue_all(
            client, keys, ids, where, now=now, queued_timeout_s=queued_timeout_s, flags=flags
        )
    except redis.RedisError as exc:
        what = (
            f"{parts[0].due} / {parts[0].waiting}"
            if len(parts) == 1
            else f"the {len(parts)} index partitions of {keys.prefix}"
        )
        raise StoreError(f"redis sweep of {what} failed: {exc}") from exc

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
    more = full and failed < len(ids)
    return SweepBatch(requeued, errors, scanned=len(ids), deferred=deferred, more=more)


def _due_pages(
    client: StateClient,
    parts: Sequence[IndexKeys],
    *,
    now: float,
    queued_timeout_s: float,
    batch: int,
) -> tuple[list[str], list[str], dict[str, IndexKeys], bool]:
    """Up to ``batch`` due and ``batch`` waiting ids, the partition of each id, and whether
    more may be due. Each partition is read for an even share of the batch (rounded up) and
    the shares are merged earliest first, so every partition is served in every sweep and
    each partition's runs come in due order."""
    per = -(-batch // len(parts))
    scores = len(parts) > 1  # one partition: its page is in order already
    pipe = client.pipeline(transaction=False)
    for part in parts:
        pipe.zrangebyscore(part.due, "-inf", now, start=0, num=per, withscores=scores)
        pipe.zrangebyscore(
            part.waiting, "-inf", now - queued_timeout_s, start=0, num=per, withscores=scores
        )
    pages: list[Any] = pipe.execute()
    if not scores:
        due, waiting = [codec.text(i) for i in pages[0]], [codec.text(i) for i in pages[1]]
        where = dict.fromkeys(due + waiting, parts[0])
        return due, waiting, where, len(due) == batch or len(waiting) == batch
    where = {}
    full = False
    picked: list[list[str]] = []
    for offset in (0, 1):  # due, then waiting
        merged: list[tuple[float, str]] = []
        for index, part in enumerate(parts):
            page = pages[2 * index + offset]
            full = full or len(page) == per
            for raw, score in page:
                where[run_id := codec.text(raw)] = part
                merged.append((float(score), run_id))
        merged.sort()
        full = full or len(merged) > batch
        picked.append([run_id for _, run_id in merged[:batch]])
    return picked[0], picked[1], where, full


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
    client: StateClient,
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
    client: StateClient,
    keys: KeySchema,
    ids: Sequence[str],
    where: dict[str, IndexKeys],
    *,
    now: float,
    queued_timeout_s: float,
    flags: dict[str, str],
) -> list[Any]:
    """REQUEUE for every id in one round trip (one per master on a cluster); per-run failures
    stay in their slot. Packed by hand (resp.py): all but the run's own keys and id are
    encoded once per batch (the index keys once per partition)."""
    bulk = resp.bulk
    head = b"*12\r\n" + bulk(b"EVALSHA") + bulk(_REQUEUE_SHA.encode()) + bulk(b"5")
    shared: dict[str, bytes] = {}
    tail = bulk(repr(float(now)).encode()) + bulk(repr(float(queued_timeout_s)).encode())
    flag = {"0": bulk(b"0"), "1": bulk(b"1")}

    def pack(targets: Sequence[str]) -> bytes:
        parts: list[bytes] = []
        for run_id in targets:
            part = where[run_id]
            indexes = shared.get(part.active)
            if indexes is None:
                indexes = shared[part.active] = b"".join(
                    bulk(x.encode()) for x in (part.active, part.due, part.waiting)
                )
            base = keys.run_base(run_id).encode()
            parts += (
                head, bulk(base + b":rec"), bulk(base + b":lease"), indexes,
                bulk(run_id.encode()), tail, flag[flags.get(run_id, "0")],
            )  # fmt: skip
        return b"".join(parts)

    def argv(run_id: str) -> list[str]:
        part = where[run_id]
        return [
            keys.rec(run_id), keys.lease(run_id), part.active, part.due, part.waiting, run_id,
            repr(float(now)), repr(float(queued_timeout_s)), flags.get(run_id, "0"),
        ]  # fmt: skip

    def send(targets: Sequence[str]) -> list[Any]:
        if isinstance(client, RedisCluster):
            return _send_by_node(client, keys, targets, pack, argv)
        return resp.send_packed(client, pack(targets), len(targets))

    replies = send(ids)
    missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
    if missing:
        # A restarted Redis forgot the script: load it, then run the calls that did not run.
        client.script_load(_REQUEUE)
        for i, reply in zip(missing, send([ids[i] for i in missing]), strict=True):
            replies[i] = reply
    return replies


# Replies of a hand-packed call that mean "this slot is (now) served elsewhere": the call did
# not run; it is sent again through the cluster client, which follows the redirect.
_MOVED = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)


def _send_by_node(
    client: RedisCluster,
    keys: KeySchema,
    ids: Sequence[str],
    pack: Callable[[Sequence[str]], bytes],
    argv: Callable[[str], list[str]],
) -> list[Any]:
    """The packed calls grouped by the master that serves each run's slot: one write and one
    read per master, every master written before any is read. Calls that met a slot
    migration go again through a cluster pipeline (``argv``: one call's keys and arguments),
    which follows the redirect."""
    groups: dict[str, list[int]] = {}
    conns: dict[str, redis.Redis] = {}
    for index, run_id in enumerate(ids):
        slot = client.keyslot(keys.rec(run_id))  # type: ignore[no-untyped-call]  # redis-py
        node = client.nodes_manager.get_node_from_slot(slot)
        if node.name not in conns:
            conns[node.name] = client.get_redis_connection(node)
        groups.setdefault(node.name, []).append(index)
    replies: list[Any] = [None] * len(ids)
    batches = [(conns[name], pack([ids[i] for i in members]), len(members))
               for name, members in groups.items()]  # fmt: skip
    for members, got in zip(groups.values(), resp.send_packed_many(batches), strict=True):
        for i, reply in zip(members, got, strict=True):
            replies[i] = reply
    moved = [i for i, r in enumerate(replies) if isinstance(r, _MOVED)]
    if moved:
        pipe = client.pipeline(transaction=False)  # type: ignore[no-untyped-call]  # redis-py
        for i in moved:
            pipe.execute_command("EVALSHA", _REQUEUE_SHA, 5, *argv(ids[i]))
        for i, reply in zip(moved, pipe.execute(raise_on_error=False), strict=True):
            replies[i] = reply
    return replies


def audit_index(client: StateClient, keys: KeySchema, *, now: float, limit: int) -> IndexAudit:
    """See ``RunStore.audit_index``. Each AUDIT call is one short script over at most ``limit``
    ids of one partition; the limit is spread evenly over the partitions."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    parts = keys.partitions()
    per = -(-limit // len(parts))
    checked = added = 0
    try:
        pipe = client.pipeline(transaction=False)
        for part in parts:
            for key in (part.active, part.due, part.waiting):
                pipe.zcard(key)
        counts = [int(n) for n in pipe.execute()]
        # One slice of every partition, all in one pipeline.
        replies = _audit_calls(client, parts, now, per)
        for index, (part, reply) in enumerate(zip(parts, replies, strict=True)):
            active, due, waiting = counts[3 * index : 3 * index + 3]
            part_checked, part_added = int(reply[0]), int(reply[1])
            # Fewer index entries than active runs: some run is invisible to the sweep. Check
            # the whole partition now (an upgrade from an older version, lost writes) instead
            # of one slice a sweep: round it once from wherever its cursor stands (the bound
            # stops a pass that races an index growing faster than it walks).
            if due + waiting < active:
                for _ in range(active // per + 1):
                    if part_checked >= active:
                        break
                    (more,) = _audit_calls(client, [part], now, per)
                    part_checked += int(more[0])
                    part_added += int(more[1])
            checked += part_checked
            added += part_added
    except redis.RedisError as exc:
        raise StoreError(f"redis audit of the {keys.prefix} run indexes failed: {exc}") from exc
    return IndexAudit(checked=checked, added=added)


def _audit_calls(
    client: StateClient, parts: Sequence[IndexKeys], now: float, limit: int
) -> list[Any]:
    def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for part in parts:
            pipe.execute_command(
                "EVALSHA",
                _AUDIT_SHA,
                4,
                part.active,
                part.due,
                part.waiting,
                part.audit,
                now,
                limit,
            )
        return list(pipe.execute(raise_on_error=False))

    replies = send()
    if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
        client.script_load(_AUDIT)  # a restarted Redis forgot it; AUDIT never ran then
        replies = send()
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def list_runs(
    client: StateClient, keys: KeySchema, *, status: RunStatus | None, limit: int
) -> list[RunRecord]:
    """Newest first. Expired and unreadable records are skipped (the latter logged)."""
    if limit <= 0:
        return []
    parts = keys.partitions()
    if status is None:
        kinds = [[p.active for p in parts], [p.done for p in parts]]
    else:
        kinds = [[p.done if status.terminal else p.active for p in parts]]
    found: list[RunRecord] = []
    try:
        for indexes in kinds:
            found.extend(_walk(client, keys, indexes, status, limit))
    except redis.RedisError as exc:
        raise StoreError(f"redis list_runs failed: {exc}") from exc
    if len(kinds) > 1:
        found.sort(key=lambda r: r.created_at, reverse=True)
    return found[:limit]


class _Merged:
    """The ids of several sorted sets, highest score first, as one sequence: each partition is
    read a page at a time (every empty page refilled in one pipeline), then merged."""

    def __init__(self, client: StateClient, indexes: Sequence[str], page: int) -> None:
        self._client = client
        self._indexes = indexes
        self._page = page
        self._buffers: list[deque[tuple[str, float]]] = [deque() for _ in indexes]
        self._next = [0] * len(indexes)
        self._open = [True] * len(indexes)

    def _refill(self) -> None:
        empty = [i for i, buf in enumerate(self._buffers) if not buf and self._open[i]]
        if not empty:
            return
        pipe = self._client.pipeline(transaction=False)
        for i in empty:
            start = self._next[i]
            pipe.zrevrange(self._indexes[i], start, start + self._page - 1, withscores=True)
        for i, rows in zip(empty, pipe.execute(), strict=True):
            self._buffers[i].extend((codec.text(member), float(score)) for member, score in rows)
            self._next[i] += len(rows)
            self._open[i] = len(rows) == self._page

    def take(self, count: int) -> list[str]:
        out: list[str] = []
        while len(out) < count:
            self._refill()
            heads = [i for i, buf in enumerate(self._buffers) if buf]
            if not heads:
                break
            best = max(heads, key=lambda i: self._buffers[i][0][1])
            out.append(self._buffers[best].popleft()[0])
        return out


def _walk(
    client: StateClient,
    keys: KeySchema,
    indexes: Sequence[str],
    status: RunStatus | None,
    limit: int,
) -> list[RunRecord]:
    found: list[RunRecord] = []
    chunk = max(limit, 100)
    # One partition: pages of ``chunk`` as before. Several: a share of it each (twice the even
    # split, so a skewed partition needs few refills), at least 10.
    page = chunk if len(indexes) == 1 else max(10, 2 * -(-chunk // len(indexes)))
    merged = _Merged(client, indexes, page)
    while len(found) < limit:
        ids = merged.take(chunk)
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
    return found[:limit]


def count_active(client: StateClient, keys: KeySchema) -> int:
    """Non-terminal runs: the sum of every partition's ``runs:active`` (one pipeline)."""
    pipe = client.pipeline(transaction=False)
    for part in keys.partitions():
        pipe.zcard(part.active)
    return sum(int(n) for n in pipe.execute())


def active_page(
    client: StateClient, keys: KeySchema, *, cursor: int, batch: int
) -> tuple[list[str], int]:
    """Up to ``batch`` ids of non-terminal runs from ``cursor`` on, and the cursor after them
    (0 at the end). One partition: one ZRANGE. Several: their sizes (one pipeline), then the
    ranges that fill the page (another), so a page costs two round trips however many
    partitions are empty."""
    parts = keys.partitions()
    part, rank = divmod(cursor, _CURSOR_STRIDE)
    if part >= len(parts):
        return [], 0
    if len(parts) == 1:
        raw = client.zrange(parts[0].active, rank, rank + batch - 1)
        ids = [codec.text(i) for i in cast("list[bytes]", raw)]
        return ids, (rank + len(ids) if len(ids) == batch else 0)
    pipe = client.pipeline(transaction=False)
    for index in range(part, len(parts)):
        pipe.zcard(parts[index].active)
    sizes = [int(n) for n in pipe.execute()]
    ranges: list[tuple[int, int, int]] = []  # partition, start, stop (inclusive)
    room, after = batch, 0
    for index, size in enumerate(sizes, start=part):
        start = rank if index == part else 0
        take = min(room, max(0, size - start))
        if take:
            ranges.append((index, start, start + take - 1))
            room -= take
        if not room:
            more = start + take < size
            if more or index + 1 < len(parts):
                after = (
                    index * _CURSOR_STRIDE + start + take if more else (index + 1) * _CURSOR_STRIDE
                )
            break
    pipe = client.pipeline(transaction=False)
    for index, start, stop in ranges:
        pipe.zrange(parts[index].active, start, stop)
    ids = [codec.text(i) for page in (pipe.execute() if ranges else []) for i in page]
    return ids, after
