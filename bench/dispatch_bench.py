"""Dispatch: no-op runs through ``executus.run`` vs plain Celery no-op tasks, same run.

Both sides run in the same invocation, on the same private redis-server, with a real
``celery worker`` subprocess of the same pool, concurrency and prefetch (1). For each pool
given (default: prefork with concurrency 4, and solo):

- **throughput**: each side's queue is pre-filled before its worker starts, and timed between
  the first and the last completion (worker start-up is not measured); the sides alternate
  within each repeat so drift hits both.
  executus: ``demo.counter`` with ``steps=1, step_s=0`` enqueued through the public ``Client``
  (registered + published); completion times are the records' ``finished_at``.
  plain: a Celery task that does nothing except, for the first and last message only, push
  ``time.time()`` to a Redis list.
- **latency**: both workers idle and running; one message at a time, alternating sides, each
  sent only after the previous one finished. executus: ``time.time()`` before
  ``Client.enqueue`` (default agent check on, as a user calls it) -> ``time.time()`` at the
  run's first model call, recorded by a bench agent the worker loads from an agents file
  (``bench.first_step``: ``demo.counter`` with a model that pushes the time of its first call
  to Redis; no production hook). plain: ``time.time()`` before ``app.send_task`` ->
  ``time.time()`` on the first line of the task body.

Run: ``python bench/dispatch_bench.py [--runs 2000] [--repeats 3] [--pools prefork:4,solo:1]
[--latency-messages 200]``. Writes the ``## Dispatch`` section of bench/RESULTS.md.

This file is also the plain side's Celery app module (``celery -A dispatch_bench``) and the
bench agent's module; the app is built on first attribute access, from
``DISPATCH_BENCH_BROKER``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery
from kombu import Exchange, Queue
from results import Machine, Target, med_range, median, pct, ratio, write_section

from executus_worker.checkpoint.handle import StoreCheckpointerFactory
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.client import Client
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.demo_agents import CounterAgent
from executus_worker.core.executor import execute
from executus_worker.core.models import Message, RunInfo, RunStatus
from executus_worker.core.ports import Agent, Deps, Model, ModelReply, ModelRequest, Tools
from executus_worker.core.stop import StopToken
from executus_worker.embedded import EmbeddedRedis
from executus_worker.publish import build_envelope
from executus_worker.settings import Settings
from executus_worker.worker.runs import RunHandler

BENCH_DIR = Path(__file__).resolve().parent
PLAIN_QUEUE = "bench.plain"
PLAIN_TASK = "bench.noop"
PLAIN_FIRST = "bench.first"
FIRST_STEP_AGENT = "bench.first_step"
STARTED = "bench:started"  # "<id> <time.time()>" pushed by either side's first line of work
BROKER_ENV = "DISPATCH_BENCH_BROKER"
# Issue 11: throughput at least these fractions of plain Celery's; latency p50 at most 1.2x.
TARGET_RATIO = {"prefork": 0.8, "solo": 0.6}
TARGET_LATENCY = 1.2
IN_PROCESS_PASSES = 3

# --------------------------------------------------------------------- the plain Celery app

_redis: dict[int, redis.Redis] = {}


def _mark(what: str) -> None:
    """Push ``"<what> <time.time()>"`` to STARTED; the time is taken before the round trip."""
    now = time.time()
    client = _redis.get(os.getpid())
    if client is None:  # one connection per process: prefork children must not share one
        client = _redis[os.getpid()] = redis.Redis.from_url(os.environ[BROKER_ENV])
    client.rpush(STARTED, f"{what} {now!r}")


def _noop(i: int, n: int) -> None:
    if i in (0, n - 1):
        _mark(str(i))


def _first(token: str) -> None:
    _mark(token)  # the first thing the task body does


def _build_plain_app(url: str | None = None) -> Celery:
    app = Celery("dispatch_bench", set_as_current=False)
    # The settings executus' worker uses that matter for dispatch cost (worker/factory.py).
    app.conf.update(
        broker_url=url or os.environ[BROKER_ENV],
        broker_connection_retry_on_startup=True,
        accept_content=["json"],
        task_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_transport_options={"visibility_timeout": 4 * 3600},
        task_default_queue=PLAIN_QUEUE,
        task_queues=[Queue(PLAIN_QUEUE, Exchange(PLAIN_QUEUE, "direct"), routing_key=PLAIN_QUEUE)],
    )
    app.task(name=PLAIN_TASK)(_noop)
    app.task(name=PLAIN_FIRST)(_first)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        built = _build_plain_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)


# --------------------------------------------------------------------- the bench agent


def attempt_mark(run_id: str, epoch: int) -> str:
    """What the bench agent marks when an attempt of a run takes its first step."""
    return f"{run_id}@{epoch}"


class _FirstStepModel:
    """``demo.counter``'s model; marks the time of each attempt's first call (its first step:
    the first attempt's is the run's first step, a later one's its first resumed step)."""

    def __init__(self, inner: Model, run: RunInfo) -> None:
        self._inner, self._what, self._first = inner, attempt_mark(run.run_id, run.epoch), True

    def complete(self, request: ModelRequest) -> ModelReply:
        if self._first:
            self._first = False
            _mark(self._what)
        return self._inner.complete(request)


class _FirstStepAgent:
    name = FIRST_STEP_AGENT

    def __init__(self) -> None:
        self._inner = CounterAgent()

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return self._inner.phases(run)

    def model(self, run: RunInfo) -> Model:
        return _FirstStepModel(self._inner.model(run), run)

    def tools(self, run: RunInfo) -> Tools:
        return self._inner.tools(run)

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        return self._inner.seed(run, phase)


def first_step_agent() -> Agent:
    """The agents-file factory of ``bench.first_step``."""
    return _FirstStepAgent()


# --------------------------------------------------------------------- the benchmark


@dataclass(frozen=True)
class Cpu:
    """CPU seconds per message, ms: the worker's main process, its pool processes (prefork
    children; none on solo), and redis-server."""

    main: float
    pool: float
    redis: float

    @property
    def total(self) -> float:
        return self.main + self.pool + self.redis


class CpuSampler:
    """CPU per message in the steady middle of a throughput run: between the queue being 80%
    and 20% full, so worker start-up and the drain at the end are left out. Wall-clock rates
    on a shared 2-CPU box move by up to 2x between repeats; CPU per message moves far less."""

    def __init__(self, url: str, queue: str, n: int) -> None:
        self._r = redis.Redis.from_url(url)
        self._queue = queue
        self._n = n
        self._pid: int | None = None
        self._series: list[tuple[int, float, float, float]] = []  # (queued, main, pool, redis)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def attach(self, pid: int) -> None:
        self._pid = pid

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            if self._pid is None:
                continue
            try:
                proc = psutil.Process(self._pid)
                own = proc.cpu_times()
                kids = sum(sum(k.cpu_times()[:2]) for k in proc.children(recursive=True))
                info = self._r.info("cpu")
                queued = int(self._r.llen(self._queue))
            except (psutil.Error, redis.RedisError):
                continue
            server = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
            self._series.append((queued, own.user + own.system, kids, server))

    def stop(self) -> Cpu | None:
        self._stop.set()
        self._thread.join()
        self._r.close()
        hi, lo = int(self._n * 0.8), int(self._n * 0.2)
        start = next((s for s in self._series if s[0] <= hi), None)
        end = next((s for s in self._series if s[0] <= lo), None)
        if start is None or end is None or start[0] - end[0] < self._n // 10:
            return None  # too few samples in the window (a tiny smoke run)
        n = start[0] - end[0]
        main, pool, server = ((end[k] - start[k]) * 1e3 / n for k in (1, 2, 3))
        return Cpu(main, pool, server)


@dataclass
class Sample:
    side: str
    runs: int
    span_s: float
    cpu: Cpu | None = None

    @property
    def per_s(self) -> float:
        return (self.runs - 1) / self.span_s


@dataclass
class Latency:
    """Enqueue -> start, seconds, one message at a time; and how long the send call took."""

    plain: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)
    plain_send: list[float] = field(default_factory=list)
    ours_send: list[float] = field(default_factory=list)
    plain_pickup: list[float] = field(default_factory=list)  # send returned -> start
    ours_pickup: list[float] = field(default_factory=list)


@dataclass
class PoolResult:
    pool: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    latency: Latency = field(default_factory=Latency)

    def per_s(self, side: str) -> list[float]:
        return [s.per_s for s in self.samples if s.side == side]

    def cpu(self, side: str) -> Cpu | None:
        """The median of each part over the repeats (None if no repeat had a window)."""
        cpus = [s.cpu for s in self.samples if s.side == side and s.cpu is not None]
        if not cpus:
            return None
        return Cpu(
            *(median([getattr(c, part) for c in cpus]) for part in ("main", "pool", "redis"))
        )

    @property
    def ratio(self) -> float:
        return ratio(median(self.per_s("executus")), median(self.per_s("plain")))

    @property
    def latency_ratio(self) -> float:
        return ratio(pct(self.latency.ours, 0.5), pct(self.latency.plain, 0.5))


def worker_argv(
    app: str, queue: str, pool: str, concurrency: int, extra: Sequence[str] = ()
) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue,
        "-P", pool, "-c", str(concurrency), "-l", "WARNING", *extra,
    ]  # fmt: skip


def _plain_worker(url: str, pool: str, concurrency: int) -> Worker:
    env = {**os.environ, BROKER_ENV: url, "PYTHONPATH": str(BENCH_DIR)}
    return Worker(worker_argv("dispatch_bench", PLAIN_QUEUE, pool, concurrency), env)


def executus_env(url: str, agents_file: Path, **settings: str) -> dict[str, str]:
    """A worker's environment: this Redis, the bench agent, ``EXECUTUS_<NAME>`` overrides."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTUS_")}
    env |= {
        "EXECUTUS_REDIS_URL": url,
        "EXECUTUS_AGENTS_FILE": str(agents_file),
        BROKER_ENV: url,  # where the bench agent marks its first step
        "PYTHONPATH": str(BENCH_DIR),  # the agents file names dispatch_bench:first_step_agent
    }
    env |= {f"EXECUTUS_{name.upper()}": value for name, value in settings.items()}
    return env


def write_agents_file(path: Path) -> Path:
    path.write_text(f'[agents]\n"{FIRST_STEP_AGENT}" = "dispatch_bench:first_step_agent"\n')
    return path


def _executus_worker(url: str, pool: str, concurrency: int, agents_file: Path) -> Worker:
    queue = Settings.model_construct().default_queue
    argv = worker_argv("executus_worker.worker", queue, pool, concurrency)
    return Worker(argv, executus_env(url, agents_file))


class Worker:
    """One ``celery worker`` subprocess, stopped by pid (warm shutdown, then kill). Its stderr
    goes to a file: a pipe nobody reads would block a worker that logs enough."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=BENCH_DIR,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            start_new_session=True,
        )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            self._err.seek(0)
            err = self._err.read().decode(errors="replace")
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{err[-3000:]}")

    def crash(self) -> None:
        """SIGKILL the worker and its pool children at once (its own session, started here)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()


def _wait_for(predicate: Any, worker: Worker, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        worker.alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s}s")
        time.sleep(0.05)


def _marks(r: redis.Redis) -> dict[str, float]:
    return {
        what: float(when)
        for what, when in (raw.decode().split() for raw in r.lrange(STARTED, 0, -1))
    }


def bench_plain(url: str, n: int, pool: str, concurrency: int, timeout_s: float) -> Sample:
    r = redis.Redis.from_url(url)
    r.flushall()
    envelopes = [build_envelope(PLAIN_TASK, [i, n], queue=PLAIN_QUEUE) for i in range(n)]
    r.lpush(PLAIN_QUEUE, *envelopes)  # LPUSH in order; kombu pops from the right: FIFO
    sampler = CpuSampler(url, PLAIN_QUEUE, n)
    worker = _plain_worker(url, pool, concurrency)
    sampler.attach(worker.proc.pid)
    try:
        # Done when both marks are in and nothing is waiting or unacked.
        _wait_for(
            lambda: r.llen(STARTED) == 2 and r.llen(PLAIN_QUEUE) == 0 and not r.hlen("unacked"),
            worker,
            timeout_s,
            "plain Celery",
        )
    finally:
        cpu = sampler.stop()
        worker.stop()
    first, last = sorted(_marks(r).values())
    r.close()
    return Sample("plain", n, last - first, cpu)


def bench_executus(
    url: str, n: int, pool: str, concurrency: int, timeout_s: float, agents_file: Path
) -> Sample:
    r = redis.Redis.from_url(url)
    r.flushall()
    with Client.from_url(url) as client:
        # The queue is filled before the worker starts, on purpose: no worker advertises yet.
        run_ids = [
            client.enqueue(
                agent="demo.counter", input={"steps": 1, "step_s": 0}, allow_unknown_agent=True
            )
            for _ in range(n)
        ]
        done_key = KeySchema(client.settings.key_prefix).done
        sampler = CpuSampler(url, client.settings.default_queue, n)
        worker = _executus_worker(url, pool, concurrency, agents_file)
        sampler.attach(worker.proc.pid)
        try:
            _wait_for(lambda: r.zcard(done_key) >= n, worker, timeout_s, "executus runs")
        finally:
            cpu = sampler.stop()
            worker.stop()
        records = [client.status(run_id) for run_id in run_ids]
    r.close()
    bad = [rec.run_id for rec in records if rec.status is not RunStatus.COMPLETED]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not complete, e.g. {bad[:3]}")
    finished = sorted(rec.finished_at or 0.0 for rec in records)
    return Sample("executus", n, finished[-1] - finished[0], cpu)


def started_at(r: redis.Redis, what: str, workers: Sequence[Worker], timeout_s: float) -> float:
    """The time the side's worker marked ``what`` as started (BLPOP on the marks list)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in workers:
            worker.alive()
        popped = r.blpop([STARTED], timeout=1)
        if popped is not None:
            got, when = popped[1].decode().split()
            if got != what:
                raise RuntimeError(f"expected the start of {what}, got {got}")
            return float(when)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not start within {timeout_s}s")


def bench_latency(
    url: str,
    pool: str,
    concurrency: int,
    n: int,
    warmup: int,
    timeout_s: float,
    agents_file: Path,
) -> Latency:
    """Both workers idle; one message at a time, the sides alternating; each sent only after
    the previous one finished (latency on an idle worker, not throughput)."""
    r = redis.Redis.from_url(url)
    r.flushall()
    workers = [
        _plain_worker(url, pool, concurrency),
        _executus_worker(url, pool, concurrency, agents_file),
    ]
    app = _build_plain_app(url)
    out = Latency()
    try:
        with Client.from_url(url) as client:

            def executus_once(token: str) -> tuple[float, float, str]:
                t0 = time.time()
                run_id = client.enqueue(
                    agent=FIRST_STEP_AGENT, input={"steps": 1, "step_s": 0}, run_id=token
                )
                return t0, time.time(), attempt_mark(run_id, 1)

            def plain_once(token: str) -> tuple[float, float, str]:
                t0 = time.time()
                app.send_task(PLAIN_FIRST, args=[token], queue=PLAIN_QUEUE)
                return t0, time.time(), token

            # The executus worker advertises its agents once it is ready: until then the
            # client's agent check refuses the enqueue.
            deadline = time.monotonic() + timeout_s
            while FIRST_STEP_AGENT not in client.agents().agents():
                for worker in workers:
                    worker.alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("the executus worker did not advertise its agents")
                time.sleep(0.1)
            for i in range(warmup + n):
                sides = [("plain", plain_once), ("ours", executus_once)]
                if i % 2:
                    sides.reverse()
                for side, send in sides:
                    token = f"{side}-{i:05d}-{os.getpid()}"
                    t0, sent, what = send(token)
                    started = started_at(r, what, workers, timeout_s)
                    if side == "ours":  # idle again: the run has finished
                        while not client.status(token).status.terminal:
                            time.sleep(0.002)
                    time.sleep(0.02)  # the worker back in its poll for the next message
                    if i >= warmup:
                        getattr(out, side).append(started - t0)
                        getattr(out, f"{side}_send").append(sent - t0)
                        getattr(out, f"{side}_pickup").append(started - sent)
    finally:
        for worker in workers:
            worker.stop()
        app.close()
        r.close()
    return out


class TimedStore:
    """A RunStore proxy that adds up the wall time spent in each store method."""

    def __init__(self, inner: RedisStore) -> None:
        self._inner = inner
        self.spent_s: defaultdict[str, float] = defaultdict(float)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.spent_s[name] += time.perf_counter() - start

        return timed


@dataclass
class Breakdown:
    per_run_ms: float
    store_ms: dict[str, float]

    @property
    def rest_ms(self) -> float:
        return self.per_run_ms - sum(self.store_ms.values())


def in_process_breakdown(url: str, n: int) -> Breakdown:
    """The worker's per-run cost without Celery: ``RunHandler.handle`` called in a loop,
    wired the way ``worker/runtime.py`` wires it, with the store's calls timed."""
    r = redis.Redis.from_url(url)
    r.flushall()
    settings = Settings(redis_url=url)
    store = TimedStore(RedisStore(r, key_prefix=settings.key_prefix))
    messages: list[tuple[str, str]] = []

    class Collect:
        def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
            messages.append((run_id, request_json))

        def close(self) -> None:
            pass

    with Client(settings, publisher=Collect()) as client:
        for _ in range(n):  # no worker process here: the handler below is the worker
            client.enqueue(
                agent="demo.counter", input={"steps": 1, "step_s": 0}, allow_unknown_agent=True
            )
    handler = RunHandler(
        store=store,  # a duck-typed proxy of the RunStore
        agents=AgentRegistry.with_builtins(),
        deps=Deps(
            checkpoints=StoreCheckpointerFactory(
                store, throttle_ms=settings.throttle_ms, result_ttl_s=settings.result_ttl_s
            )
        ),
        settings=settings,
        drain=StopToken(),
        execute=execute,
    )
    store.spent_s.clear()
    start = time.perf_counter()
    for run_id, request_json in messages:
        handler.handle([run_id, request_json], {})
    elapsed = time.perf_counter() - start
    r.close()
    per_call = {k: v / n * 1000 for k, v in sorted(store.spent_s.items(), key=lambda kv: -kv[1])}
    return Breakdown(elapsed / n * 1000, per_call)


def _versions(url: str) -> tuple[str, str]:  # (the libraries, the Redis version)
    server = redis.Redis.from_url(url).info("server")["redis_version"]
    libs = f"Celery {version('celery')}, kombu {version('kombu')}, redis-py {version('redis')}"
    return libs, server


def _pool_section(args: argparse.Namespace, res: PoolResult) -> str:
    plain, ours = res.per_s("plain"), res.per_s("executus")
    goal = TARGET_RATIO.get(res.pool)
    verdict = "" if goal is None else (" (meets" if res.ratio >= goal else " (MISSES")
    verdict += "" if goal is None else f" the ≥ {goal:.0%} target)"
    rows = "\n".join(
        f"| {i + 1} | {p:,.0f} | {o:,.0f} | {o / p:.0%} |"
        for i, (p, o) in enumerate(zip(plain, ours, strict=True))
    )
    lat = res.latency
    lat_goal = " (meets" if res.latency_ratio <= TARGET_LATENCY else " (MISSES"
    return f"""### Pool `{res.pool}`, concurrency {res.concurrency}

Throughput, each queue pre-filled with {args.runs:,} messages:

| repeat | plain Celery (tasks/s) | executus.run (runs/s) | ratio |
|---:|---:|---:|---:|
{rows}
| **median (min-max)** | **{med_range(plain, nd=0)}** | **{med_range(ours, nd=0)}** | \
**{res.ratio:.0%}** |

Ratio of medians: **{res.ratio:.0%}** of plain Celery{verdict}.
{_cpu_table(res)}
Latency on idle workers, {len(lat.ours)} messages per side (after {args.latency_warmup} \
warm-up ones), ms:

| side | p50 | p90 | min | of which the send call, p50 | send returned → start, p50 |
|---|---:|---:|---:|---:|---:|
| plain Celery: `send_task` → task body starts | {pct(lat.plain, 0.5) * 1e3:.2f} \
| {pct(lat.plain, 0.9) * 1e3:.2f} | {min(lat.plain) * 1e3:.2f} | \
{pct(lat.plain_send, 0.5) * 1e3:.2f} | {pct(lat.plain_pickup, 0.5) * 1e3:.2f} |
| executus: `Client.enqueue` → first step starts | {pct(lat.ours, 0.5) * 1e3:.2f} \
| {pct(lat.ours, 0.9) * 1e3:.2f} | {min(lat.ours) * 1e3:.2f} | \
{pct(lat.ours_send, 0.5) * 1e3:.2f} | {pct(lat.ours_pickup, 0.5) * 1e3:.2f} |

p50 ratio: **{res.latency_ratio:.2f}x**{lat_goal} the ≤ {TARGET_LATENCY}x target).
"""


def _cpu_table(res: PoolResult) -> str:
    plain, ours = res.cpu("plain"), res.cpu("executus")
    if plain is None or ours is None:
        return ""
    rows = "\n".join(
        f"| {name} | {c.main:.3f} | {c.pool:.3f} | {c.redis:.3f} | {c.total:.3f} |"
        for name, c in (("plain Celery", plain), ("executus.run", ours))
    )
    return f"""
CPU per message in the steady middle of the throughput runs (queue 80% -> 20% full; median of
the repeats), ms -- the work behind the rates above, which move far less between repeats:

| side | worker main process | pool processes | redis-server | total |
|---|---:|---:|---:|---:|
{rows}
| **executus / plain** | {ours.main / plain.main:.2f}x | \
{(f"{ours.pool / plain.pool:.2f}x" if plain.pool else "--")} | \
{ours.redis / plain.redis:.2f}x | **{ours.total / plain.total:.2f}x** |
"""


def _section(
    args: argparse.Namespace, libs: str, results: list[PoolResult], breakdown: Breakdown
) -> str:
    store_calls = ", ".join(f"`{k}` {v:.2f}" for k, v in breakdown.store_ms.items())
    pools = "\n".join(_pool_section(args, res) for res in results)
    return f"""`python bench/dispatch_bench.py --runs {args.runs} --repeats {args.repeats} \
--pools {args.pools} --latency-messages {args.latency_messages}` ({libs}).

No-op runs (`demo.counter`, `steps=1, step_s=0`, enqueued through `Client`) through
`executus.run` vs plain Celery no-op tasks, same private redis-server, a real `celery worker`
subprocess per side with the same pool, concurrency, prefetch 1, `acks_late`, JSON.
Throughput: timed from the first to the last completion; the sides alternate within a repeat.
Latency: both workers running and idle, one message at a time, sides alternating, the next
sent once the previous one finished; executus from `time.time()` before `Client.enqueue`
(register + `enqueued` event + publish; the agent check on, as a user calls it) to the run's
first model call, plain Celery from before `app.send_task` to the first line of the task.

Round trips per no-op message on the worker (broker = the state Redis). Plain Celery: BRPOP,
kombu's unacked record (MULTI/EXEC), the ack (MULTI/EXEC). executus on solo: BRPOP, the
unacked record with the run's CLAIM in the same transaction (`worker/preclaim.py`), FINISH,
which also removes the unacked entry so the ack is in memory only (`checkpoint/settle.py`).
On prefork: BRPOP, unacked record and ack in the main process, CLAIM and FINISH in the child
(a claim made on receipt would name the main process as owner; see `worker/preclaim.py`); the
child sends its CLAIM first thing in the task and reads the reply when the handler claims
(`preclaim.Ahead`), so that round trip overlaps Celery's task set-up and the message checks.
Audit events go in batches every `AUDIT_LINGER_MS` (20 ms) from a background thread.

{pools}
Where the worker's time goes, measured in-process without Celery (`RunHandler.handle` in a
loop over {args.runs:,} runs, wired as `worker/runtime.py` does; fastest of \
{IN_PROCESS_PASSES} passes): **{breakdown.per_run_ms:.2f} ms per run**, of which store calls \
(ms/run): {store_calls}; everything else (message validation, agent and executor, lease
bookkeeping, logging): {breakdown.rest_ms:.2f} ms. The enqueue-side register is not part of
the throughput measurement.
"""


def _targets(results: list[PoolResult]) -> list[Target]:
    out = []
    for res in results:
        key = f"dispatch.{res.pool}"
        if res.pool in TARGET_RATIO and (res.pool != "prefork" or res.concurrency == 4):
            value = (
                f"{res.ratio:.0%} ({median(res.per_s('executus')):,.0f} vs "
                f"{median(res.per_s('plain')):,.0f} /s)"
            )
            out.append(Target(key, value, res.ratio >= TARGET_RATIO[res.pool]))
    if results:
        value = "; ".join(
            f"{r.pool} c={r.concurrency}: {r.latency_ratio:.2f}x "
            f"({pct(r.latency.ours, 0.5) * 1e3:.2f} vs {pct(r.latency.plain, 0.5) * 1e3:.2f} ms)"
            for r in results
        )
        met = all(r.latency_ratio <= TARGET_LATENCY for r in results)
        out.append(Target("dispatch.latency", value, met))
    return out


def _pools(spec: str) -> list[tuple[str, int]]:
    pools = []
    for part in spec.split(","):
        pool, _, concurrency = part.partition(":")
        if pool not in {"prefork", "threads", "solo"}:
            raise SystemExit(f"unknown pool {pool!r} in --pools")
        pools.append((pool, int(concurrency or 1)))
    return pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    # Five: one repeat's ratio swings by +-15 points on a shared 2-core box.
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--pools", default="prefork:4,solo:1", help="pool:concurrency,... (default %(default)s)"
    )
    parser.add_argument("--latency-messages", type=int, default=200, help="per side and pool")
    parser.add_argument("--latency-warmup", type=int, default=10)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md.")
    args = parser.parse_args()

    machine = Machine.capture()
    results: list[PoolResult] = []
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        agents_file = write_agents_file(Path(tmp) / "agents.toml")
        libs, redis_version = _versions(server.url)
        for pool, concurrency in _pools(args.pools):
            res = PoolResult(pool, concurrency)
            for repeat in range(args.repeats):
                sides = ["plain", "executus"]
                if repeat % 2:
                    sides.reverse()
                for side in sides:
                    if side == "plain":
                        sample = bench_plain(
                            server.url, args.runs, pool, concurrency, args.timeout_s
                        )
                    else:
                        sample = bench_executus(
                            server.url, args.runs, pool, concurrency, args.timeout_s, agents_file
                        )
                    res.samples.append(sample)
                    cpu = sample.cpu
                    print(
                        f"{pool} c={concurrency} repeat {repeat + 1} {sample.side:>8}: "
                        f"{sample.per_s:8.0f} /s"
                        + (f", CPU {cpu.total:.3f} ms/message" if cpu is not None else ""),
                        flush=True,
                    )
            res.latency = bench_latency(
                server.url, pool, concurrency, args.latency_messages, args.latency_warmup,
                args.timeout_s, agents_file,
            )  # fmt: skip
            print(
                f"{pool} c={concurrency} latency p50: plain "
                f"{pct(res.latency.plain, 0.5) * 1e3:.2f} ms, executus "
                f"{pct(res.latency.ours, 0.5) * 1e3:.2f} ms ({res.latency_ratio:.2f}x)",
                flush=True,
            )
            results.append(res)
        # The fastest of a few passes: one pass on a shared 2-CPU box swings by +-30%.
        breakdown = min(
            (in_process_breakdown(server.url, args.runs) for _ in range(IN_PROCESS_PASSES)),
            key=lambda b: b.per_run_ms,
        )
        print(f"in-process: {breakdown.per_run_ms:.2f} ms/run; store {breakdown.store_ms}")
    machine.finish(redis_version=redis_version)
    section = _section(args, libs, results, breakdown)
    targets = _targets(results)
    print(section)
    if not args.no_write:
        write_section("Dispatch", section, machine, targets)
        print("wrote the Dispatch section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
