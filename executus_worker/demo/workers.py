"""The second half of ``executus-worker demo``: the same story with real worker processes.

Starts a real ``celery -A executus_worker.worker worker`` (threads pool) in its own session,
enqueues ``demo.counter`` and ``demo.phased`` through ``Client``, sends SIGTERM to the worker's
main pid mid-run (a deploy), shows the interrupted runs and their checkpoints, starts a second
worker whose recovery sweep re-publishes them, and checks the final transcripts are exact.

Everything lives under a unique key prefix and a unique queue, so this never touches real runs
or real workers on a shared Redis. Every process started here is stopped by its pid, and the
keys are deleted at the end (SCAN MATCH on the unique prefix, plus the queue's own keys).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import redis

from executus_worker.checkpoint import RedisStore
from executus_worker.client import Client, WaitTimeout
from executus_worker.core.models import RunRecord, RunStatus
from executus_worker.errors import ExecutusError
from executus_worker.settings import Settings, redact_url

STEP_S = 0.3
COUNTER_STEPS = 8
PHASES = ("plan", "work", "report")
PHASE_STEPS = 3
SIGTERM_AFTER = 3  # counter steps checkpointed before the "deploy" signals the worker
START_TIMEOUT_S = 30.0  # a cold worker start on a slow box; normally ~1-2 s
EXIT_TIMEOUT_S = 15.0
FINISH_TIMEOUT_S = 30.0


class DemoFailure(Exception):
    """Something the demo waited for did not happen; the message says what."""


@dataclass
class _Worker:
    label: str
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class WorkerDemo:
    def __init__(self, redis_url: str, out: TextIO, workdir: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.redis_url, self.out, self.workdir = redis_url, out, workdir
        self.prefix = f"executus-demo-w{os.getpid()}-{tag}"
        self.queue = f"executus-demo-{tag}"
        self.tag = tag
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.store = RedisStore(self.redis, key_prefix=self.prefix)
        # The client publishes to settings.default_queue: the demo's unique queue.
        self.client = Client.from_url(
            redis_url,
            key_prefix=self.prefix,
            settings=Settings.model_construct(default_queue=self.queue),
        )
        self.workers: list[_Worker] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # -- processes -------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
        env.update(
            EXECUTUS_REDIS_URL=self.redis_url,
            EXECUTUS_KEY_PREFIX=self.prefix,
            EXECUTUS_DEFAULT_QUEUE=self.queue,
            EXECUTUS_LEASE_TTL_S="3",
            EXECUTUS_SWEEP_INTERVAL_S="1",
        )
        return env

    def start_worker(self, label: str) -> _Worker:
        name = f"demo{label}-{self.tag}"
        argv = [
            sys.executable, "-m", "celery", "-A", "executus_worker.worker", "worker",
            "--pool", "threads", "-c", "2", "-Q", self.queue, "-n", f"{name}@%h",
            "--loglevel", "WARNING",
            # No cluster chatter: no start-up sync with (or events to) other workers that may
            # share this Redis; also saves mingle's ~1 s wait.
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                argv,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals reach its main pid only, not a group
            )
        worker = _Worker(label, name, proc, log)
        self.workers.append(worker)
        self.say(f"   started worker {label}: pid {proc.pid}, -n {name}@%h, queue {self.queue}")
        return worker

    def stop_all(self) -> None:
        """SIGTERM each live worker we started, SIGKILL it if it is still there after 10 s."""
        for worker in self.workers:
            proc = worker.proc
            if proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            self.say(f"   stopped worker {worker.label} (pid {proc.pid})")

    def cleanup_keys(self) -> int:
        names = [k for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        # The queue list and kombu's binding tables for it (global names, unique by our queue;
        # the exchange is named after the queue).
        names += [
            self.queue.encode(),
            f"_kombu.binding.{self.queue}".encode(),
            f"_kombu.binding_permanent.{self.queue}".encode(),
        ]
        self.redis.zrem("_kombu.binding_deadlines", self.queue)
        return int(self.redis.delete(*names))

    # -- the story -------------------------------------------------------------------

    def wait_for(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout_s:
                raise DemoFailure(f"timed out after {timeout_s:.0f}s waiting for {what}")
            time.sleep(0.05)
        return time.monotonic() - started

    def wait_run(self, run_id: str, worker: _Worker) -> RunRecord:
        """``Client.wait`` in short slices, so a worker that dies is reported, not waited out."""
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while True:
            try:
                return self.client.wait(run_id, timeout_s=0.5)
            except WaitTimeout:
                if worker.proc.poll() is not None:
                    raise DemoFailure(
                        f"worker {worker.label} exited early:\n{worker.tail()}"
                    ) from None
                if time.monotonic() > deadline:
                    raise DemoFailure(
                        f"run {run_id} not finished after {FINISH_TIMEOUT_S:.0f}s"
                    ) from None

    def wait_served(self, worker: _Worker, agent: str) -> None:
        """Until the worker advertises ``agent``: enqueue refuses agents no live worker serves."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.client.agents().serving(agent, self.queue):
            if worker.proc.poll() is not None:
                raise DemoFailure(f"worker {worker.label} exited early:\n{worker.tail()}")
            if time.monotonic() > deadline:
                raise DemoFailure(f"worker {worker.label} did not advertise {agent} in time")
            time.sleep(0.1)
        served = ", ".join(self.client.agents().agents())
        self.say(f"   worker {worker.label} is up and serves: {served}")

    def iteration(self, run_id: str) -> int:
        checkpoint = self.store.load_checkpoint(run_id)
        return checkpoint.iteration if checkpoint is not None else 0

    def run(self) -> bool:
        self.say(f"Part 2: real worker processes (key prefix {self.prefix}, queue {self.queue})")
        a = self.start_worker("A")
        self.wait_served(a, "demo.counter")
        counter = self.client.enqueue(
            agent="demo.counter", input={"steps": COUNTER_STEPS, "step_s": STEP_S}
        )
        phased = self.client.enqueue(
            agent="demo.phased",
            input={"phases": list(PHASES), "steps": PHASE_STEPS, "step_s": STEP_S},
        )
        self.say(f"   enqueued demo.counter {counter} ({COUNTER_STEPS} steps x {STEP_S}s)")
        self.say(
            f"   enqueued demo.phased  {phased} ({'/'.join(PHASES)}, "
            f"{PHASE_STEPS} steps each x {STEP_S}s)"
        )

        def counter_progressed() -> bool:
            if a.proc.poll() is not None:
                raise DemoFailure(f"worker A exited early:\n{a.tail()}")
            return self.iteration(counter) >= SIGTERM_AFTER

        waited = self.wait_for("worker A to run the first steps", counter_progressed,
                               START_TIMEOUT_S)  # fmt: skip
        self.say(f"   worker A checkpointed {SIGTERM_AFTER} counter steps ({waited:.1f}s after "
                 "start)")  # fmt: skip
        signalled = time.monotonic()
        os.kill(a.proc.pid, signal.SIGTERM)
        self.say(f"   SIGTERM -> worker A main pid {a.proc.pid} (a deploy)")
        try:
            code = a.proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DemoFailure(
                f"worker A still running {EXIT_TIMEOUT_S:.0f}s after SIGTERM"
            ) from None
        self.say(f"   worker A exited with code {code} {time.monotonic() - signalled:.2f}s after "
                 "SIGTERM (warm shutdown: each run stops at a step boundary)")  # fmt: skip
        for label, run_id in (("counter", counter), ("phased ", phased)):
            self.show_interrupted(label, run_id)

        b = self.start_worker("B")
        self.say("   worker B's recovery sweep re-publishes the interrupted runs ...")
        started = time.monotonic()
        records = {run_id: self.wait_run(run_id, b) for run_id in (counter, phased)}
        self.say(f"   both runs terminal {time.monotonic() - started:.1f}s after worker B started")

        expected = {
            counter: [f"step {i}" for i in range(1, COUNTER_STEPS + 1)],
            phased: [f"{p} step {j}" for p in PHASES for j in range(1, PHASE_STEPS + 1)],
        }
        ok = True
        for label, run_id in (("counter", counter), ("phased", phased)):
            record = records[run_id]
            transcript = [m.content for m in self.client.transcript(run_id)]
            exact = record.status is RunStatus.COMPLETED and transcript == expected[run_id]
            ok = ok and exact
            self.say(f"   {label}: {record.status.value}, attempts {record.attempts}, output "
                     f"{record.output!r}; transcript ({len(transcript)}):")  # fmt: skip
            self.say("     " + " | ".join(transcript))
            self.say(f"     {'exact: each step once, in order' if exact else 'NOT EXACT'}")
        return ok

    def show_interrupted(self, label: str, run_id: str) -> None:
        record = self.client.status(run_id)
        checkpoint = self.store.load_checkpoint(run_id)
        if checkpoint is None:
            self.say(f"   {label} {run_id}: status {record.status.value}, no checkpoint")
            return
        phase = (
            f", completed phases {checkpoint.completed_phases or '-'}, "
            f"active phase {checkpoint.active_phase}"
            if checkpoint.active_phase is not None or checkpoint.completed_phases
            else ""
        )
        self.say(
            f"   {label} {run_id}: status {record.status.value}; checkpoint iteration "
            f"{checkpoint.iteration}, {len(checkpoint.messages)} messages{phase}"
        )

    def close(self) -> None:
        self.stop_all()
        self.client.close()
        try:
            deleted = self.cleanup_keys()
            self.say(f"   deleted {deleted} keys under {self.prefix} and queue {self.queue}")
        except redis.RedisError as exc:
            self.say(f"   could not delete the demo keys under {self.prefix}: {exc}")
        self.redis.close()


def run_worker_demo(redis_url: str, out: TextIO) -> int:
    """Run the multi-process part against ``redis_url``; 0 if both transcripts are exact."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="executus-demo-") as tmp:
        demo = WorkerDemo(redis_url, out, Path(tmp))
        try:
            ok = demo.run()
        except (DemoFailure, ExecutusError, redis.RedisError, OSError) as exc:
            print(f"   FAILED against {redact_url(redis_url)}: {exc}", file=out)
            for worker in demo.workers:
                print(f"   worker {worker.label} log tail:\n{worker.tail()}", file=out)
            ok = False
        finally:
            demo.close()
    elapsed = time.monotonic() - started
    print(
        f"{'Worker transcripts exact' if ok else 'Worker part FAILED'} ({elapsed:.1f}s).", file=out
    )
    return 0 if ok else 1
