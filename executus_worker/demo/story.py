"""``executus-worker demo``: the whole story, live, with real processes on one Redis.

Two workers of different pools (A: prefork, B: threads) and beat start; five runs of the
traced demo agents are enqueued and one cron job is due. Mid-run, A gets SIGTERM (a deploy:
its runs stop at a step boundary, keep their checkpoint, and are picked up again), then B
gets SIGKILL (a crash: its leases expire and the sweep re-queues its runs); a replacement is
started for each. The display shows every run's status, step, phase, owner and attempts as it
changes. At the end every transcript is checked to be exact and the step trace (see
``agents``) to show one owner at a time (``verdict``); the exit code says whether both held.

Everything lives under a key prefix and a queue unique to this demo, so it can run against a
shared Redis without touching real runs or workers, and is deleted at the end -- the keys by
name or by a SCAN of the unique prefix, kombu's entries for the demo queue one by one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import redis
from pydantic import JsonValue

from executus_worker.client import Client, RunProgress
from executus_worker.client.progress import with_final_steps
from executus_worker.demo.agents import COUNTER, PHASED, agents_file_text, read_trace
from executus_worker.demo.processes import Child, Fleet
from executus_worker.demo.verdict import RunVerdict, claims_text, judge
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.store import ScheduleStore
from executus_worker.schedules.timing import format_fire
from executus_worker.settings import Settings

STEP_S = 0.4
LEASE_TTL_S = 3  # a SIGKILLed owner's runs come back this fast (default: 30 s)
POLL_S = 0.25
SIGTERM_AT_STEP = 2  # A is "deployed" once one of its runs is this far
SIGKILL_AFTER_S = 2.0  # ... and B crashes this long after A was told to stop
FAULT_DEADLINE_S = 25.0  # inject the fault anyway if the worker never got that far
FINISH_DEADLINE_S = 60.0
START_DEADLINE_S = 60.0  # a cold worker start on a loaded box; normally 2-4 s
JOB = "every-minute"


@dataclass(frozen=True)
class Planned:
    run_id: str
    agent: str
    input: dict[str, JsonValue]

    @property
    def expected(self) -> list[str]:
        return expected_transcript(self.agent, self.input)


def expected_transcript(agent: str, data: dict[str, JsonValue]) -> list[str]:
    steps = int(str(data.get("steps", 0)))
    if agent == PHASED:
        phases = [str(p) for p in data["phases"]] if isinstance(data["phases"], list) else []
        return [f"{p} step {j}" for p in phases for j in range(1, steps + 1)]
    return [f"step {i}" for i in range(1, steps + 1)]


def _counter(steps: int) -> dict[str, JsonValue]:
    return {"steps": steps, "step_s": STEP_S}


def _phased(phases: list[str], steps: int) -> dict[str, JsonValue]:
    return {"phases": list[JsonValue](phases), "steps": steps, "step_s": STEP_S}


RUNS = (
    Planned("counter-1", COUNTER, _counter(14)),
    Planned("phased-1", PHASED, _phased(["plan", "work", "report"], 3)),
    Planned("counter-2", COUNTER, _counter(12)),
    Planned("phased-2", PHASED, _phased(["research", "write"], 4)),
    Planned("counter-3", COUNTER, _counter(10)),
)
JOB_INPUT = _counter(5)


class Display(Protocol):
    """Where the story shows itself (``cli.live`` has a terminal and a plain version)."""

    def show(self, runs: Sequence[RunProgress]) -> None: ...

    def note(self, text: str) -> None: ...

    def say(self, text: str = "") -> None: ...


class DemoFailure(Exception):
    """Something the demo waited for did not happen; the message says what."""


class Story:
    def __init__(self, redis_url: str, workdir: Path, stop: threading.Event) -> None:
        tag = uuid.uuid4().hex[:6]
        self.prefix = self.queue = f"executus-demo-{tag}"
        self.redis_url, self.workdir, self.stop = redis_url, workdir, stop
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.client = Client.from_url(
            redis_url,
            key_prefix=self.prefix,
            settings=Settings.model_construct(default_queue=self.queue),
        )
        self.schedules = ScheduleStore(self.redis, key_prefix=self.prefix)
        self.fleet = Fleet(workdir, self._env(), self.queue)
        self.planned: dict[str, Planned] = {p.run_id: p for p in RUNS}
        self.started = time.monotonic()
        self._sigterm_at: float | None = None
        self._killed = False
        self._job_paused = False
        self._deadlines_before: set[bytes] = set()
        self._final: dict[str, int] = {}

    def owner_label(self, owner: str) -> str:
        return self.fleet.label_owner(owner)

    def _env(self) -> dict[str, str]:
        agents_file = self.workdir / "agents.toml"
        agents_file.write_text(agents_file_text())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
        return env | {
            "EXECUTUS_REDIS_URL": self.redis_url,
            "EXECUTUS_KEY_PREFIX": self.prefix,
            "EXECUTUS_DEFAULT_QUEUE": self.queue,
            "EXECUTUS_AGENTS_FILE": str(agents_file),
            "EXECUTUS_LEASE_TTL_S": str(LEASE_TTL_S),
            "EXECUTUS_SWEEP_INTERVAL_S": "1",
        }

    # -- the live part --------------------------------------------------------------------

    def play(self, display: Display) -> bool:
        """Run the story; False if interrupted (Ctrl-C). Raises DemoFailure on a timeout."""
        self._deadlines_before = set(_deadlines(self.redis))
        a = self.fleet.start_worker("A", "prefork")
        b = self.fleet.start_worker("B", "threads")
        beat = self.fleet.start_beat()
        display.note(
            f"started worker A (prefork, 2 processes) pid {a.pid}, worker B (threads, 2) pid "
            f"{b.pid}, beat pid {beat.pid}; queue {self.queue}"
        )
        self._wait_served(display, 2)
        if not self.stop.is_set():
            self._add_job(display)
            for p in RUNS:
                self.client.enqueue(agent=p.agent, input=p.input, run_id=p.run_id)
        deadline = time.monotonic() + FINISH_DEADLINE_S
        while not self.stop.is_set():
            runs = with_final_steps(
                self.client.progress(list(self.planned)), self._final, self.client.transcript
            )
            display.show(runs)
            self._direct(runs, display)
            crashed = self.fleet.died_unasked()
            if crashed is not None:
                raise DemoFailure(f"{crashed.label} exited on its own:\n{crashed.tail()}")
            if self._killed and self._job_paused and all(_terminal(r) for r in runs):
                return True
            if time.monotonic() > deadline:
                stuck = [r.run_id for r in runs if not _terminal(r)]
                raise DemoFailure(f"not finished after {FINISH_DEADLINE_S:.0f}s: {stuck}")
            self.stop.wait(POLL_S)
        display.note("Ctrl-C: stopping everything the demo started")
        return False

    def _wait_served(self, display: Display, workers: int) -> None:
        """Until ``workers`` workers advertise the demo agents (enqueue refuses an agent no
        live worker serves, and the faults need runs on both pools)."""
        deadline = time.monotonic() + START_DEADLINE_S
        while not self.stop.is_set():
            serving = self.client.agents().serving(COUNTER, self.queue)
            if len(serving) >= workers:
                names = ", ".join(self.fleet.label_pid(ad.pid) for ad in serving)
                display.note(f"{names} up, serving {COUNTER} and {PHASED}")
                return
            crashed = self.fleet.died_unasked()
            if crashed is not None:
                raise DemoFailure(f"{crashed.label} exited on its own:\n{crashed.tail()}")
            if time.monotonic() > deadline:
                raise DemoFailure(f"the workers did not start within {START_DEADLINE_S:.0f}s")
            self.stop.wait(POLL_S)

    def _add_job(self, display: Display) -> None:
        job = JobSpec.model_validate(
            {"name": JOB, "cron": "* * * * *", "run": {"agent": COUNTER, "input": JOB_INPUT}}
        )
        self.schedules.add_job(job)
        # Reserve the fire of the current minute, as a beat running since then would have:
        # beat's first pass then catches it up at once, instead of the demo waiting for the
        # next minute boundary.
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        self.schedules.compare_and_set(
            JOB,
            expect={"schedule_key": "", "next_fire": ""},
            values={"schedule_key": job.schedule_key, "next_fire": format_fire(minute)},
        )
        display.note(f"cron job {JOB!r} ('* * * * *') is due: its fire of {minute:%H:%M} UTC")

    def _direct(self, runs: Sequence[RunProgress], display: Display) -> None:
        """The fault script: SIGTERM A mid-run, SIGKILL B a bit later, replace both."""
        now = time.monotonic()
        a, b = self._child("A"), self._child("B")
        if self._sigterm_at is None:
            if self._busy(a, runs, SIGTERM_AT_STEP) or now - self.started > FAULT_DEADLINE_S:
                self.fleet.signal(a, signal.SIGTERM)
                self._sigterm_at = now
                display.note(f"SIGTERM -> A pid {a.pid} (a deploy): its runs stop at a step")
        elif a.proc.poll() is not None and self._find("A2") is None:
            display.note(
                f"A exited with code {a.proc.returncode}, {now - self._sigterm_at:.1f}s after "
                "SIGTERM; starting A2 (prefork)"
            )
            self.fleet.start_worker("A2", "prefork")
        if (
            not self._killed
            and self._sigterm_at is not None
            and now - self._sigterm_at > SIGKILL_AFTER_S
            and (self._busy(b, runs, 1) or now - self._sigterm_at > FAULT_DEADLINE_S)
        ):
            self.fleet.signal(b, signal.SIGKILL)
            self._killed = True
            b2 = self.fleet.start_worker("B2", "threads")
            display.note(
                f"SIGKILL -> B pid {b.pid} (a crash): its leases expire within {LEASE_TTL_S}s "
                f"and the sweep re-queues its runs; started B2 (threads) pid {b2.pid}"
            )
        self._watch_job(runs, display)

    def _watch_job(self, runs: Sequence[RunProgress], display: Display) -> None:
        if self._job_paused:
            return
        fired = self.schedules.state(JOB).last_run_id
        if fired:
            # One fire is the point; pausing keeps a minute boundary from adding another.
            self.schedules.pause(JOB)
            self._job_paused = True
            self.planned[fired] = Planned(fired, COUNTER, JOB_INPUT)
            display.note(f"beat fired {JOB!r} as run {fired}; job paused (one fire is enough)")

    def _find(self, name: str) -> Child | None:
        return next((c for c in self.fleet.children if c.name == name), None)

    def _child(self, name: str) -> Child:
        found = self._find(name)
        if found is None:
            raise DemoFailure(f"no process {name}")
        return found

    def _busy(self, worker: Child, runs: Sequence[RunProgress], at_step: int) -> bool:
        """Does ``worker`` own a running run that got to ``at_step``?"""
        return any(
            r.record is not None
            and r.record.status.value == "running"
            and (r.iteration or 0) >= at_step
            and self.fleet.worker_of(r.record.owner) is worker
            for r in runs
        )

    # -- the verdict ----------------------------------------------------------------------

    def report(self, say: Callable[[str], None]) -> bool:
        trace = read_trace(self.redis, self.prefix)
        verdicts: list[RunVerdict] = []
        for run_id, planned in self.planned.items():
            record = self.client.status(run_id)
            transcript = [m.content for m in self.client.transcript(run_id)]
            verdicts.append(judge(run_id, record.status.value, planned.expected, transcript, trace))
        width = max(len(v.run_id) for v in verdicts)
        say(f"Summary after {time.monotonic() - self.started:.1f}s:")
        for v in verdicts:
            exact = "exact" if v.exact else "NOT EXACT"
            reruns = f", {v.reruns} step(s) re-run" if v.reruns else ""
            say(
                f"  {v.run_id:<{width}}  {v.status:<9}  transcript {exact} ({len(v.transcript)} "
                f"messages{reruns})"
            )
            say(f"  {'':<{width}}  {claims_text(v.steps, self.fleet.label_pid)}")
            if not v.exact:
                say(f"  {'':<{width}}  expected {v.expected}, got {v.transcript}")
            for conflict in v.conflicts:
                say(f"  {'':<{width}}  TWO OWNERS: {conflict}")
        ok = all(v.ok for v in verdicts)
        traced = sum(len(v.steps) for v in verdicts)
        if ok:
            say(
                f"All {len(verdicts)} runs completed with exact transcripts; no run was executed "
                f"by two owners at once ({traced} traced step executions compared)."
            )
        else:
            bad = [v.run_id for v in verdicts if not v.ok]
            say(f"FAILED: {', '.join(bad)} (see above)")
        return ok

    # -- cleaning up ----------------------------------------------------------------------

    def close(self) -> list[str]:
        lines = self.fleet.stop_all()
        self.client.close()
        try:
            lines.append(f"deleted {self._delete_keys()} demo keys")
        except redis.RedisError as exc:
            lines.append(f"could not delete the demo keys under {self.prefix}: {exc}")
        self.redis.close()
        return lines

    def _delete_keys(self) -> int:
        names = list(self.redis.scan_iter(match=f"{self.prefix}*", count=1000))
        deleted = int(self.redis.delete(*names)) if names else 0
        return deleted + _forget_queue(self.redis, self.queue, self._deadlines_before)


def _terminal(run: RunProgress) -> bool:
    return run.record is not None and run.record.status.terminal


def _deadlines(client: redis.Redis) -> list[bytes]:
    members = client.zrange("_kombu.binding_deadlines", 0, -1)
    return [m for m in members if isinstance(m, bytes)]


def _forget_queue(client: redis.Redis, queue: str, deadlines_before: set[bytes]) -> int:
    """Remove kombu's global entries for the demo queue and workers: their key names are
    shared by every kombu user of this Redis, so entry by entry, never a whole shared key."""
    removed = int(client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"))
    # A worker that is SIGKILLed never unbinds its remote-control (pidbox) queue.
    pidbox = "_kombu.binding.celery.pidbox"
    ours = [m for m in client.smembers(pidbox) if queue.encode() in m]
    removed += int(client.srem(pidbox, *ours)) if ours else 0
    # Binding TTLs kombu added for exchanges the demo's workers were the first to bind.
    for member in _deadlines(client):
        exchange = member.decode(errors="replace")
        if member not in deadlines_before and not client.exists(f"_kombu.binding.{exchange}"):
            removed += int(client.zrem("_kombu.binding_deadlines", member))
    # A SIGKILLed worker leaves its unacked deliveries, which kombu would restore to the
    # (deleted) queue after the visibility timeout.
    for tag, raw in client.hscan_iter("unacked"):
        try:
            message = json.loads(raw)
            routed_to = message[0]["properties"]["delivery_info"]["routing_key"]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
        if routed_to == queue:
            removed += int(client.hdel("unacked", tag))
            client.zrem("unacked_index", tag)
    return removed
