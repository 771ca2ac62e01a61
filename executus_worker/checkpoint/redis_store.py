"""RedisStore: the RunStore on Redis, one atomic Lua script per state transition.

The constructor only stores its arguments (no round trip, no hashing: the worker builds a store
per delivery). Scripts go out as EVALSHA of a digest computed once per process; on NOSCRIPT the
source is loaded and the call repeated, so a Redis restart or a ``SCRIPT FLUSH`` is handled
without anyone's help. Every redis-py error leaves as ``StoreError``;
script errors that mean something become ``OwnershipLost`` or ``CorruptCheckpointError``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import redis
from pydantic import JsonValue
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster

from executus_worker.checkpoint import codec, hotpath, redis_index, scripts
from executus_worker.checkpoint.keys import DEFAULT_CLUSTER_SHARDS, KeySchema
from executus_worker.checkpoint.settle import Settle
from executus_worker.checkpoint.store import (
    ClaimResult,
    ClaimStatus,
    Fence,
    IndexAudit,
    RenewStatus,
    RunningLease,
    SaveAck,
    SweepBatch,
)
from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    Message,
    RunRecord,
    RunRequest,
    RunStatus,
)
from executus_worker.core.stop import OwnershipLost
from executus_worker.errors import (
    CorruptCheckpointError,
    RunNotFoundError,
    StoreError,
    TranscriptBehind,
)
from executus_worker.redis_connect import StateClient

log = logging.getLogger(__name__)

DEFAULT_RESULT_TTL_S = 86_400
# How long after a takeover its owner may still refund it (prove it survived) before the
# takeover counts toward dead, in lease TTLs: one to notice, one to reach Redis again.
_REFUND_GRACE_LEASES = 2

# SHA1 of each script's source, as Redis computes it (the sources are ASCII). Updated from
# SCRIPT LOAD's reply should a server ever disagree. Computed once here, not per store: building
# redis-py Script objects hashes every source again, ~30 us per RedisStore.
_SHA: dict[str, str] = {
    name: hashlib.sha1(src.encode(), usedforsecurity=False).hexdigest()
    for name, src in scripts.WITH_LIB.items()
}


@dataclass(frozen=True)
class EnqueuedEvent:
    """A new run's ``enqueued`` event, written by its REGISTER (see ``register_enqueued``)."""

    data_json: str
    maxlen: int
    ttl_ms: int


@dataclass(frozen=True)
class ClaimCall:
    """One CLAIM script call: EVALSHA ``sha`` with ``keys`` and ``args``; ``token`` is the fence
    it claims with."""

    run_id: str
    token: str
    sha: str
    keys: list[str]
    args: list[Any]


class RedisStore:
    """RunStore on Redis. Thread-safe to the extent the given client is (redis-py pools are)."""

    def __init__(
        self,
        client: StateClient,
        *,
        key_prefix: str = "executus",
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        shards: int | None = None,
    ) -> None:
        """``shards``: the index partitions (``keys.py``); None means 0 on one Redis and
        ``DEFAULT_CLUSTER_SHARDS`` on a cluster, where 0 is refused (scripts would cross
        slots)."""
        cluster = isinstance(client, RedisCluster)
        if shards is None:
            shards = DEFAULT_CLUSTER_SHARDS if cluster else 0
        elif cluster and shards == 0:
            raise ValueError("on Redis Cluster the run indexes need partitions (shards >= 1)")
        self._r = client
        # Scripts go out hand-packed on a connection each thread keeps (hotpath.py) where the
        # client has one pool; anything else (Redis Cluster) takes redis-py's normal path.
        self._packed = (
            client if isinstance(client, redis.Redis) and hotpath.supported(client) else None
        )
        self.keys = KeySchema(key_prefix, shards)
        # Used where the protocol gives no TTL: a claim or cancel that ends a run.
        self._result_ttl_s = result_ttl_s

    @property
    def client(self) -> StateClient:
        """The Redis (or Redis Cluster) client the store writes through."""
        return self._r

    # ------------------------------------------------------------------------ plumbing

    def _run(self, name: str, run_id: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            try:
                return self._evalsha(name, keys, args)
            except redis.exceptions.NoScriptError:
                # What redis-py's Script does: load the source, then run it once more.
                _SHA[name] = self._r.script_load(scripts.WITH_LIB[name])
                return self._evalsha(name, keys, args)
        except redis.ResponseError as exc:
            self._raise_script_error(run_id, exc)
        except redis.RedisError as exc:
            raise StoreError(f"redis {name} for run {run_id!r} failed: {exc}") from exc

    def _evalsha(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._packed is not None:
            return hotpath.call(self._packed, hotpath.evalsha(_SHA[name], keys, args))
        return self._r.evalsha(_SHA[name], len(keys), *keys, *args)

    def _raise_script_error(self, run_id: str, exc: redis.ResponseError) -> NoReturn:
        message = str(exc)
        if "EXECUTUS_FENCED" in message:
            raise OwnershipLost(message.split("EXECUTUS_FENCED", 1)[1].strip()) from exc
        if "EXECUTUS_SHORT" in message:
            detail = message.split("EXECUTUS_SHORT", 1)[1].strip()
            raise TranscriptBehind(run_id, f"{self.keys.msgs(run_id)}: {detail}") from exc
        raise StoreError(f"redis script error for run {run_id!r}: {exc}") from exc

    def _record(self, run_id: str, flat: Sequence[Any]) -> RunRecord:
        it = iter(flat)
        return codec.decode_record(run_id, self.keys.rec(run_id), dict(zip(it, it, strict=True)))

    # ------------------------------------------------------------------------ records

    def register(
        self,
        request: RunRequest,
        *,
        run_id: str,
        queue: str,
        now: float,
        rejected: str | None = None,
    ) -> tuple[RunRecord, bool]:
        return self.register_enqueued(
            request, run_id=run_id, queue=queue, now=now, rejected=rejected
        )

    def register_enqueued(
        self,
        request: RunRequest,
        *,
        run_id: str,
        queue: str,
        now: float,
        rejected: str | None = None,
        event: EnqueuedEvent | None = None,
        push: tuple[str, bytes] | None = None,
    ) -> tuple[RunRecord, bool]:
        """``register``, and only if the run is new, in the same script: append ``event`` to
        the run's event stream and LPUSH ``push`` (list key, envelope) -- the client's enqueue
        in one round trip when the broker is this same Redis server (never on a cluster: the
        list would be in another slot)."""
        fields = codec.record_fields(
            request, run_id=run_id, queue=queue, now=now, rejected=rejected
        )
        keys = self.keys.run(run_id).all()
        args: list[Any] = [run_id, now, 2 * len(fields)]
        args.extend(x for pair in fields.items() for x in pair)
        if event is not None:
            args += ["e", event.maxlen, event.ttl_ms, "enqueued", repr(now), event.data_json]
        else:
            args.append("-")
        if event is not None or push is not None:
            keys.append(self.keys.events(run_id))
        if push is not None:
            keys.append(push[0])
            args.append(push[1])
        reply = self._run("register", run_id, keys, args)
        if int(reply[0]) == 1:
            return codec.decode_record(run_id, self.keys.rec(run_id), fields), True
        return self._record(run_id, reply[1]), False

    def get(self, run_id: str) -> RunRecord | None:
        try:
            raw = self._r.hgetall(self.keys.rec(run_id))
        except redis.RedisError as exc:
            raise StoreError(f"redis HGETALL for run {run_id!r} failed: {exc}") from exc
        if not raw:
            return None
        return codec.decode_record(run_id, self.keys.rec(run_id), raw)

    def claim(
        self, run_id: str, *, owner: str, lease_ttl_s: float, max_attempts: int, now: float
    ) -> ClaimResult:
        call = self.claim_call(
            run_id, owner=owner, lease_ttl_s=lease_ttl_s, max_attempts=max_attempts, now=now
        )
        return self.claim_result(call, self._run("claim", run_id, call.keys, call.args))

    def claim_call(
        self, run_id: str, *, owner: str, lease_ttl_s: float, max_attempts: int, now: float
    ) -> ClaimCall:
        """The CLAIM script call ``claim`` sends, for a caller that sends it in its own
        transaction (worker/preclaim.py); decode its reply with ``claim_result``."""
        grace = _REFUND_GRACE_LEASES * lease_ttl_s
        token = Fence.new().token
        args = [
            run_id,
            now,
            owner,
            _ms(lease_ttl_s),
            max_attempts,
            self._result_ttl_s,
            token,
            grace,
            CHECKPOINT_FORMAT_VERSION,  # a run parked for a newer format is deferred
        ]
        return ClaimCall(run_id, token, _SHA["claim"], self.keys.run(run_id).all(), args)

    def send_claim(self, call: ClaimCall) -> hotpath.Pending | None:
        """Send ``call`` and return without reading its reply (``hotpath.send``; decode
        ``Pending.read()`` with ``claim_result``); None where the client has no single
        connection pool (a cluster). No retry and no script load: a failed send raises
        ``redis.RedisError``, and a NOSCRIPT reply is the caller's cue to ``claim``."""
        if self._packed is None:
            return None
        return hotpath.send(self._packed, hotpath.evalsha(call.sha, call.keys, call.args))

    def claim_result(self, call: ClaimCall, reply: Any) -> ClaimResult:
        """What the reply to ``call`` means (CorruptCheckpointError for a record that does not
        decode and was not claimed)."""
        run_id, token = call.run_id, call.token
        status = ClaimStatus(codec.text(reply[0]))
        if len(reply) < 2:
            return ClaimResult(status)
        flat = reply[1]
        try:
            record = self._record(run_id, flat)
        except CorruptCheckpointError as exc:
            if status is not ClaimStatus.CLAIMED:
                raise
            # The script has claimed the run: hand the claim out, or nobody could end it.
            it = iter(flat)
            epoch = codec.text(dict(zip(it, it, strict=True)).get("epoch", "0"))
            held = Fence(token, int(epoch) if epoch.isdigit() else 0)
            return ClaimResult(status, epoch=held.epoch, fence=held, problem=str(exc))
        fence = Fence(token, record.epoch) if status is ClaimStatus.CLAIMED else None
        return ClaimResult(
            status, epoch=record.epoch, attempts=record.attempts, record=record, fence=fence
        )

    def renew(
        self, run_id: str, *, fence: Fence, lease_ttl_s: float, now: float | None = None
    ) -> RenewStatus:
        reply = self.renew_many([(run_id, fence)], lease_ttl_s=lease_ttl_s, now=now)[0]
        if isinstance(reply, StoreError):
            raise reply
        return reply

    def renew_many(
        self,
        leases: Sequence[tuple[str, Fence]],
        *,
        lease_ttl_s: float,
        now: float | None = None,
    ) -> list[RenewStatus | StoreError]:
        """One pipelined round trip for every lease of a process: one slow or failing lease
        cannot delay the others, and the cost per interval is one round trip, not one per run."""
        if not leases:
            return []
        ttl = _ms(lease_ttl_s)
        deadline = (time.time() if now is None else now) + lease_ttl_s
        try:
            pipe = self._r.pipeline(transaction=False)
            for run_id, fence in leases:
                keys = (self.keys.rec(run_id), self.keys.lease(run_id))
                # execute_command, not pipe.evalsha: redis-py's cluster pipeline blocks the
                # evalsha method (it cannot know the keys share a slot; ours do), not EVALSHA.
                pipe.execute_command("EVALSHA", _SHA["renew"], 2, *keys, fence.token, ttl)
            # The recovery index: the sweep looks at these runs no sooner than their new
            # deadline. One command per partition, outside RENEW so RENEW stays single-slot;
            # only a hint (the sweep's CAS decides from the lease), so it need not be atomic
            # with it. XX: never re-index a run that left the index; GT: never pull a deadline
            # earlier.
            due: dict[str, dict[str, float]] = {}
            for run_id, _ in leases:
                due.setdefault(self.keys.partition(run_id).due, {})[run_id] = deadline
            for key, members in due.items():
                pipe.zadd(key, members, xx=True, gt=True)
            replies = pipe.execute(raise_on_error=False)[: len(leases)]
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                # A restarted Redis forgot the script: load it, then the whole batch once more.
                _SHA["renew"] = self._r.script_load(scripts.WITH_LIB["renew"])
                return self.renew_many(leases, lease_ttl_s=lease_ttl_s, now=now)
        except redis.RedisError as exc:
            raise StoreError(f"redis renew of {len(leases)} lease(s) failed: {exc}") from exc
        out: list[RenewStatus | StoreError] = []
        for (run_id, _), reply in zip(leases, replies, strict=True):
            if isinstance(reply, Exception):
                out.append(StoreError(f"renew of run {run_id!r} failed: {reply}"))
            else:
                out.append(RenewStatus(codec.text(reply)))
        return out

    def running_leases(
        self, *, cursor: int = 0, batch: int = 1000
    ) -> tuple[list[RunningLease], int]:
        try:
            ids, after = redis_index.active_page(self._r, self.keys, cursor=cursor, batch=batch)
            pipe = self._r.pipeline(transaction=False)
            for run_id in ids:
                pipe.hmget(self.keys.rec(run_id), "status", "owner", "fence")
            rows = pipe.execute() if ids else []
        except redis.RedisError as exc:
            raise StoreError(f"redis scan of running leases failed: {exc}") from exc
        found = [
            RunningLease(run_id, codec.text(owner), codec.text(fence))
            for run_id, (status, owner, fence) in zip(ids, rows, strict=True)
            if status == b"running" and owner and fence
        ]
        return found, after

    def release_lease(self, run_id: str, *, fence_token: str) -> bool:
        keys = [self.keys.rec(run_id), self.keys.lease(run_id), self.keys.partition(run_id).due]
        return int(self._run("release", run_id, keys, [fence_token, run_id])) == 1

    def refund(self, run_id: str, *, fence: Fence) -> bool:
        reply = self._run("refund", run_id, [self.keys.rec(run_id)], [fence.token])
        return int(reply) == 1

    def request_cancel(self, run_id: str, *, now: float) -> RunRecord:
        args = [run_id, now, self._result_ttl_s]
        reply = self._run("cancel", run_id, self.keys.run(run_id).all(), args)
        if codec.text(reply[0]) == "missing":
            raise RunNotFoundError(run_id)
        return self._record(run_id, reply[1])

    def list_runs(self, *, status: RunStatus | None = None, limit: int = 100) -> list[RunRecord]:
        return redis_index.list_runs(self._r, self.keys, status=status, limit=limit)

    def sweep(
        self,
        *,
        now: float,
        queued_timeout_s: float,
        batch: int = 1000,
        backlogged: Callable[[str], bool] | None = None,
    ) -> SweepBatch:
        return redis_index.sweep(
            self._r,
            self.keys,
            now=now,
            queued_timeout_s=queued_timeout_s,
            batch=batch,
            backlogged=backlogged,
        )

    def audit_index(self, *, now: float, limit: int = 500) -> IndexAudit:
        return redis_index.audit_index(self._r, self.keys, now=now, limit=limit)

    # ------------------------------------------------------------------------ checkpoints

    def load_checkpoint(self, run_id: str) -> Checkpoint | None:
        ckpt, msgs = self.keys.ckpt(run_id), self.keys.msgs(run_id)
        # MULTI/EXEC: meta and transcript from the same instant, in one round trip.
        meta, body = self._read(run_id, lambda p: (p.hgetall(ckpt), p.get(msgs)))
        if not meta:
            return None
        return codec.decode_checkpoint(
            run_id, meta_key=ckpt, msgs_key=msgs, meta=meta, messages_json=codec.stored_array(body)
        )

    def save_checkpoint(
        self,
        run_id: str,
        *,
        fence: Fence,
        base_len: int,
        new_messages: Sequence[Message],
        checkpoint: Checkpoint,
        now: float,
        expect_seq: str = "",
        seq: str = "",
        meta: Mapping[str, str] | None = None,
    ) -> SaveAck:
        if meta is None:
            meta = codec.meta_fields(checkpoint, epoch=fence.epoch, now=now)
        payload = codec.append_payload(new_messages, base_len=base_len)
        k = self.keys
        args = [run_id, now, fence.token, base_len, len(new_messages), payload, expect_seq, seq]
        args.extend(x for pair in meta.items() for x in pair)
        keys = (k.rec(run_id), k.ckpt(run_id), k.msgs(run_id))
        reply = int(self._run("save", run_id, keys, args))  # stored count * 2 + cancel flag
        return SaveAck(stored=reply >> 1, cancel_requested=reply & 1 == 1)

    def finish(
        self,
        run_id: str,
        *,
        fence: Fence,
        status: RunStatus,
        output: JsonValue,
        error: str | None,
        base_len: int,
        new_messages: Sequence[Message],
        now: float,
        result_ttl_s: int,
        expect_seq: str = "",
        keep_checkpoint: bool = False,
        settle: Settle | None = None,
    ) -> None:
        if not status.terminal:
            raise ValueError(f"finish needs a terminal status, not {status.value!r}")
        keys = self.keys.run(run_id).all()
        args: list[Any] = [
            run_id,
            now,
            fence.token,
            base_len,
            len(new_messages),
            codec.append_payload(new_messages, base_len=base_len),
            status.value,
            codec.dumps(output),
            "0" if error is None else "1",
            error or "",
            int(result_ttl_s),
            expect_seq,
            "1" if keep_checkpoint else "0",
        ]
        if settle is not None and not isinstance(self._r, redis.Redis):
            settle = None  # a cluster: the broker's keys would be in other slots
        if settle is not None:
            # The caller checked that the broker is this server and database.
            keys += [settle.index_key, settle.hash_key]
            args.append(settle.tag)
        self._run("finish", run_id, keys, args)
        if settle is not None:
            settle.settled(settle.tag)

    def interrupt(
        self, run_id: str, *, fence: Fence, now: float, reason: str | None = None
    ) -> None:
        args = [run_id, now, fence.token, *([reason] if reason else [])]
        self._run("interrupt", run_id, self.keys.run(run_id).all(), args)

    def park(
        self, run_id: str, *, fence: Fence, now: float, reason: str, needs_format: int
    ) -> None:
        # The interrupt script with a format: one transition, written once (scripts.INTERRUPT).
        args = [run_id, now, fence.token, reason, int(needs_format)]
        self._run("interrupt", run_id, self.keys.run(run_id).all(), args)

    def transcript(self, run_id: str) -> list[Message]:
        rec, msgs = self.keys.rec(run_id), self.keys.msgs(run_id)
        exists, body = self._read(run_id, lambda p: (p.exists(rec), p.get(msgs)))
        if not exists and not body:
            raise RunNotFoundError(run_id)
        return codec.decode_messages(run_id, msgs, codec.stored_array(body))

    def _read(
        self, run_id: str, build: Callable[[Pipeline | ClusterPipeline], object]
    ) -> list[Any]:
        try:
            pipe = self._r.pipeline(transaction=True)
            build(pipe)
            return list(pipe.execute())
        except redis.RedisError as exc:
            raise StoreError(f"redis read for run {run_id!r} failed: {exc}") from exc


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
