"""Dispatch throughput: no-op runs through ``executus.run`` vs plain Celery no-op tasks.

Both sides run in the same invocation, on the same private redis-server, with a real
``celery worker`` subprocess of the same pool, concurrency and prefetch (1), and alternate
within each repeat so drift hits both. Each side's queue is pre-filled before its worker
starts, and throughput is timed between the first and the last completion (worker start-up is
not measured):

- executus: ``demo.counter`` with ``steps=1, step_s=0`` enqueued through the public ``Client``
  (registered + published); completion times are the records' ``finished_at``.
- plain: a Celery task that does nothing except, for the first and last message only, push
  ``time.time()`` to a Redis list (so the measured body costs nothing for the other N-2).

Run: ``python bench/dispatch_bench.py [--runs 2000] [--repeats 3] [--pool prefork] [-c 4]``.
Writes the ``## Dispatch`` section of bench/RESULTS.md (other sections are left alone).

This file is also the plain side's Celery app module (``celery -A dispatch_bench``); the app is
built on first attribute access, from ``DISPATCH_BENCH_BROKER``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue

from executus_worker.checkpoint.handle import StoreCheckpointerFactory
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.client import Client
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import RunStatus
from executus_worker.core.ports import Deps
from executus_worker.core.stop import StopToken
from executus_worker.embedded import EmbeddedRedis
from executus_worker.publish import build_envelope
from executus_worker.settings import Settings
from executus_worker.worker.runs import RunHandler

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
PLAIN_QUEUE = "bench.plain"
PLAIN_TASK = "bench.noop"
PLAIN_DONE = "bench:plain:done"
BROKER_ENV = "DISPATCH_BENCH_BROKER"
TARGET_RATIO = 0.70
IN_PROCESS_PASSES = 3

# --------------------------------------------------------------------- the plain Celery app

_redis: redis.Redis | None = None


def _noop(i: int, n: int) -> None:
    global _redis  # noqa: PLW0603 -- one lazily built connection per worker process
    if i in (0, n - 1):
        if _redis is None:
            _redis = redis.Redis.from_url(os.environ[BROKER_ENV])
        _redis.rpush(PLAIN_DONE, repr(time.time()))


def _build_plain_app() -> Celery:
    app = Celery("dispatch_bench", set_as_current=False)
    # The settings executus' worker uses that matter for dispatch cost (worker/factory.py).
    app.conf.update(
        broker_url=os.environ[BROKER_ENV],
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
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        built = _build_plain_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)


# --------------------------------------------------------------------- the benchmark


@dataclass
class Sample:
    side: str
    runs: int
    span_s: float

    @property
    def per_s(self) -> float:
        return (self.runs - 1) / self.span_s


def _worker_argv(app: str, queue: str, pool: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue,
        "-P", pool, "-c", str(concurrency), "-l", "WARNING",
    ]  # fmt: skip


class Worker:
    """One ``celery worker`` subprocess, stopped by pid (warm shutdown, then kill)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=BENCH_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{err[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()


def _wait_for(predicate: Any, worker: Worker, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        worker.alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not finish within {timeout_s}s")
        time.sleep(0.05)


def bench_plain(url: str, n: int, pool: str, concurrency: int, timeout_s: float) -> Sample:
    r = redis.Redis.from_url(url)
    r.flushall()
    envelopes = [build_envelope(PLAIN_TASK, [i, n], queue=PLAIN_QUEUE) for i in range(n)]
    r.lpush(PLAIN_QUEUE, *envelopes)  # LPUSH in order; kombu pops from the right: FIFO
    env = {**os.environ, BROKER_ENV: url, "PYTHONPATH": str(BENCH_DIR)}
    worker = Worker(_worker_argv("dispatch_bench", PLAIN_QUEUE, pool, concurrency), env)
    try:
        # Done when both marks are in and nothing is waiting or unacked.
        _wait_for(
            lambda: r.llen(PLAIN_DONE) == 2 and r.llen(PLAIN_QUEUE) == 0 and not r.hlen("unacked"),
            worker,
            timeout_s,
            "plain Celery",
        )
    finally:
        worker.stop()
    first, last = sorted(float(x) for x in r.lrange(PLAIN_DONE, 0, -1))
    r.close()
    return Sample("plain", n, last - first)


def bench_executus(url: str, n: int, pool: str, concurrency: int, timeout_s: float) -> Sample:
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
        env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTUS_")}
        env["EXECUTUS_REDIS_URL"] = url
        worker = Worker(
            _worker_argv(
                "executus_worker.worker", client.settings.default_queue, pool, concurrency
            ),
            env,
        )
        try:
            _wait_for(lambda: r.zcard(done_key) >= n, worker, timeout_s, "executus runs")
        finally:
            worker.stop()
        records = [client.status(run_id) for run_id in run_ids]
    r.close()
    bad = [rec.run_id for rec in records if rec.status is not RunStatus.COMPLETED]
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not complete, e.g. {bad[:3]}")
    finished = sorted(rec.finished_at or 0.0 for rec in records)
    return Sample("executus", n, finished[-1] - finished[0])


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


def _versions(url: str) -> str:
    server = redis.Redis.from_url(url).info("server")["redis_version"]
    return (
        f"Python {platform.python_version()}, Celery {version('celery')}, "
        f"kombu {version('kombu')}, redis-py {version('redis')}, Redis {server}, "
        f"{os.cpu_count()} CPUs ({platform.machine()})"
    )


def _section(
    args: argparse.Namespace, versions: str, samples: list[Sample], breakdown: Breakdown
) -> str:
    plain = [s.per_s for s in samples if s.side == "plain"]
    ours = [s.per_s for s in samples if s.side == "executus"]
    ratio = statistics.median(ours) / statistics.median(plain)
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    store_calls = ", ".join(f"`{k}` {v:.2f}" for k, v in breakdown.store_ms.items())
    rows = "\n".join(
        f"| {i + 1} | {p:,.0f} | {o:,.0f} | {o / p:.0%} |"
        for i, (p, o) in enumerate(zip(plain, ours, strict=True))
    )
    return f"""## Dispatch

`python bench/dispatch_bench.py --runs {args.runs} --repeats {args.repeats} --pool {args.pool} \
--concurrency {args.concurrency}` ({time.strftime("%Y-%m-%d")}; {versions}).

No-op runs (`demo.counter`, `steps=1, step_s=0`, enqueued through `Client`) through
`executus.run` vs plain Celery no-op tasks, same private redis-server, real `celery worker`
subprocess each, pool `{args.pool}`, concurrency {args.concurrency}, prefetch 1, `acks_late`,
JSON; each queue pre-filled with {args.runs:,} messages before its worker starts; timed from
the first to the last completion; sides alternate within a repeat.

| repeat | plain Celery (tasks/s) | executus.run (runs/s) | ratio |
|---:|---:|---:|---:|
{rows}
| **median** | **{statistics.median(plain):,.0f}** | **{statistics.median(ours):,.0f}** | \
**{ratio:.0%}** |

Ratio of medians: **{ratio:.0%}** of plain Celery — {verdict} the ≥ {TARGET_RATIO:.0%} target.
Where the worker's time goes, measured in-process without Celery (`RunHandler.handle` in a
loop over {args.runs:,} runs, wired as `worker/runtime.py` does; fastest of \
{IN_PROCESS_PASSES} passes): **{breakdown.per_run_ms:.2f} ms per run**, of which store calls \
(ms/run): {store_calls}; everything else (message validation,
agent and executor, lease bookkeeping, logging): {breakdown.rest_ms:.2f} ms. The enqueue-side
register is not part of either measurement.
"""


def write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Dispatch\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", "-c", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md.")
    args = parser.parse_args()

    samples: list[Sample] = []
    with EmbeddedRedis() as server:
        versions = _versions(server.url)
        for repeat in range(args.repeats):
            sides = [bench_plain, bench_executus]
            if repeat % 2:
                sides.reverse()
            for side in sides:
                sample = side(server.url, args.runs, args.pool, args.concurrency, args.timeout_s)
                samples.append(sample)
                print(f"repeat {repeat + 1} {sample.side:>8}: {sample.per_s:8.0f} /s", flush=True)
        # The fastest of a few passes: one pass on a shared 2-CPU box swings by +-30%.
        breakdown = min(
            (in_process_breakdown(server.url, args.runs) for _ in range(IN_PROCESS_PASSES)),
            key=lambda b: b.per_run_ms,
        )
        print(f"in-process: {breakdown.per_run_ms:.2f} ms/run; store {breakdown.store_ms}")
    section = _section(args, versions, samples, breakdown)
    print(section)
    if not args.no_write:
        write_section(section)


if __name__ == "__main__":
    main()
