"""``executus-worker demo --in-process``: the run kernel alone, interrupted and resumed.

Runs the real kernel against the real Redis store, in-process (no Celery worker): the point is
to watch a checkpoint survive an interruption -- its keys are shown as they are in Redis -- and
a resume produce the exact transcript. Takes about a second. Keys live under a per-process
prefix and are deleted at the end, so it never touches real runs even on a shared Redis.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import redis
from pydantic import JsonValue

from executus_worker.checkpoint import KeySchema, RedisStore, StoreCheckpointerFactory
from executus_worker.checkpoint.store import ClaimStatus
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import Message, OutcomeKind, RunInfo, RunOutcome, RunRequest
from executus_worker.core.ports import Deps
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.demo.resolve import resolve_redis
from executus_worker.errors import ConfigError, ExecutusError
from executus_worker.settings import redact_url

STEP_S = 0.05  # short enough for a demo under a few seconds, long enough to be a "step"


@dataclass(frozen=True)
class Scenario:
    agent: str
    input: dict[str, JsonValue]
    stop_after: int  # request SHUTDOWN after this many steps of the first attempt
    expected: tuple[str, ...]
    title: str


SCENARIOS = (
    Scenario(
        "demo.counter", {"steps": 6, "step_s": STEP_S}, 3,
        tuple(f"step {i}" for i in range(1, 7)),
        "single loop: resumes mid-loop from the saved transcript",
    ),
    Scenario(
        "demo.phased", {"phases": ["plan", "work", "report"], "steps": 2, "step_s": STEP_S}, 3,
        tuple(f"{p} step {j}" for p in ("plan", "work", "report") for j in (1, 2)),
        "phased: skips the finished phase, restarts the interrupted one from its start",
    ),
)  # fmt: skip


def run_demo(redis_url: str | None, out: TextIO) -> int:
    """Run it, printing to ``out``: 0 if every transcript came out exact, 1 if not, 2 if there
    is no usable Redis."""
    started = time.monotonic()
    try:
        resolved = resolve_redis(redis_url)
    except ConfigError as exc:  # no Redis configured, none local, no redis-server to start
        print(f"No Redis for the demo: {exc}", file=out)
        return 2
    prefix = f"executus-demo-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(resolved.url, socket_timeout=5)
    keys = KeySchema(prefix)
    run_ids: list[str] = []
    print(f"Redis: {resolved.description}", file=out)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"Cannot reach Redis at {redact_url(resolved.url)}: {exc}", file=out)
        client.close()
        resolved.stop()
        return 2
    print(f"Key prefix: {prefix} (deleted at the end)\n", file=out)
    try:
        demo = _Demo(RedisStore(client, key_prefix=prefix), keys, client, out)
        ok = True
        for number, scenario in enumerate(SCENARIOS, 1):
            run_id = f"demo-{number}-{uuid.uuid4().hex[:8]}"
            run_ids.append(run_id)
            ok = demo.scenario(number, scenario, run_id) and ok
        elapsed = time.monotonic() - started
        print(f"{'All transcripts exact' if ok else 'MISMATCH'} ({elapsed:.1f}s).", file=out)
        return 0 if ok else 1
    finally:
        deleted = _cleanup(client, keys, run_ids)
        print(f"Deleted {deleted} demo keys under {prefix}.", file=out)
        client.close()
        stopped = resolved.stop()
        if stopped:
            print(f"{stopped[0].upper()}{stopped[1:]}.", file=out)


def _cleanup(client: redis.Redis, keys: KeySchema, run_ids: Sequence[str]) -> int:
    """Delete the demo's keys by name (never by SCAN: the Redis may be a big shared one)."""
    names = list(keys.indexes)
    for run_id in run_ids:
        names.extend(_run_keys(keys, run_id))
    try:
        return int(client.delete(*names))
    except redis.RedisError:
        return 0  # the embedded server goes away anyway; on a shared one all but indexes expire


class _StopAfter:
    """Step observer: prints each step, and plays the deploy that interrupts the run."""

    def __init__(self, out: TextIO, token: StopToken | None, after: int) -> None:
        self.out, self.token, self.after = out, token, after

    def on_step(self, run: RunInfo, iteration: int, new_messages: Sequence[Message]) -> None:
        text = " | ".join(m.content for m in new_messages)
        print(f"     step {iteration:>2}: {text}", file=self.out)
        if self.token is not None and iteration >= self.after:
            self.token.request(StopReason.SHUTDOWN, "demo: simulated warm shutdown")


class _Demo:
    def __init__(self, store: RedisStore, keys: KeySchema, client: redis.Redis, out: TextIO):
        self.store, self.keys, self.client, self.out = store, keys, client, out
        self.registry = AgentRegistry.with_builtins()
        self.owner = f"demo@{socket.gethostname()}:{os.getpid()}"

    def say(self, text: str = "") -> None:
        print(text, file=self.out)

    def scenario(self, number: int, scenario: Scenario, run_id: str) -> bool:
        self.say(f"{number}) {scenario.agent} {scenario.input} -- {scenario.title}")
        request = RunRequest(agent=scenario.agent, input=scenario.input)
        self.store.register(request, run_id=run_id, queue="executus", now=time.time())
        self.say(f"   registered run {run_id}: status {self._status(run_id)}")

        token = StopToken()
        first = self._attempt(request, run_id, _StopAfter(self.out, token, scenario.stop_after),
                              token)  # fmt: skip
        self.say(f"   -> {first.kind.value} after {first.iterations} steps; checkpoint in Redis:")
        self._show_checkpoint(run_id)

        second = self._attempt(request, run_id, _StopAfter(self.out, None, 0), StopToken())
        transcript = tuple(m.content for m in self.store.transcript(run_id))
        self.say(f"   -> {second.kind.value}, output {second.output!r}")
        self.say(f"   status {self._status(run_id)}; final transcript ({len(transcript)}):")
        self.say("     " + " | ".join(transcript))
        exact = (
            first.kind is OutcomeKind.INTERRUPTED
            and second.kind is OutcomeKind.COMPLETED
            and transcript == scenario.expected
        )
        self.say(f"   {'exact: each step once, in order' if exact else 'NOT EXACT'}\n")
        return exact

    def _attempt(
        self, request: RunRequest, run_id: str, observer: _StopAfter, token: StopToken
    ) -> RunOutcome:
        claim = self.store.claim(
            run_id, owner=self.owner, lease_ttl_s=30, max_attempts=5, now=time.time()
        )
        if claim.status is not ClaimStatus.CLAIMED:
            raise ExecutusError(f"demo could not claim {run_id}: {claim.status.value}")
        self.say(f"   claim -> epoch {claim.epoch} (attempt {claim.attempts}), status running")
        fence = claim.fence.token if claim.fence else ""
        run = RunInfo.from_request(request, run_id=run_id, epoch=claim.epoch,
                                   attempt=claim.attempts, fence=fence)  # fmt: skip
        deps = Deps(
            checkpoints=StoreCheckpointerFactory(self.store, throttle_ms=0, result_ttl_s=600),
            observer=observer,
        )
        return execute(self.registry.get(request.agent), run, deps, token)

    def _status(self, run_id: str) -> str:
        record = self.store.get(run_id)
        return record.status.value if record else "missing"

    def _show_checkpoint(self, run_id: str) -> None:
        checkpoint = self.store.load_checkpoint(run_id)
        for key in _run_keys(self.keys, run_id):
            kind = self.client.type(key)
            if kind in (b"none", "none"):
                continue
            ttl = self.client.ttl(key)
            detail = _text(kind)
            if key.endswith(":msgs"):
                # One JSON-array string, appended in place per save (see checkpoint/codec.py).
                count = len(checkpoint.messages) if checkpoint is not None else 0
                detail = f"{detail} (JSON array, appended per save), {count} messages"
            self.say(f"     {key}  {detail}{'' if ttl < 0 else f', ttl {ttl}s'}")
        if checkpoint is not None:
            self.say(
                f"     iteration {checkpoint.iteration}, {len(checkpoint.messages)} messages, "
                f"completed phases {checkpoint.completed_phases or '-'}, "
                f"active phase {checkpoint.active_phase or '-'}, status {self._status(run_id)}"
            )
        if checkpoint is not None and checkpoint.active_phase is not None:
            redo = len(checkpoint.messages) - checkpoint.phase_start
            self.say(
                f"     resume skips {checkpoint.completed_phases} and restarts phase "
                f"{checkpoint.active_phase!r} from its start (its {redo} message(s) are redone)"
            )
        elif checkpoint is not None:
            self.say(f"     resume continues at step {checkpoint.iteration + 1}, no new input")


def _run_keys(keys: KeySchema, run_id: str) -> list[str]:
    run = keys.run(run_id)
    return [run.rec, run.lease, run.ckpt, run.msgs]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
