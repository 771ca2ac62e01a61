"""Crash to resumed step: SIGKILL a worker mid-run, and time until the run steps again.

A run of the bench agent (``demo.counter`` whose model marks the time of each attempt's first
step, see dispatch_bench.py) runs on a real ``celery worker``; a few steps in, the worker and
its pool children are SIGKILLed together. Two ways back, each ``--repeats`` times:

- **restart**: a worker started on this host under the same node name right after the crash.
  The old owner is provably gone (its pid no longer exists on this kernel, worker/identity.py),
  so the new worker takes the run back at boot, without waiting for the lease.
- **peer**: a second worker, already running when the crash happens, on the same host but
  with its boot behind it: it cannot act before the lease expires (``EXECUTUS_LEASE_TTL_S``)
  and its next periodic sweep (``EXECUTUS_SWEEP_INTERVAL_S``) finds the run -- what happens
  whenever the owner's death cannot be proven (another host, another pid namespace).

Reported: SIGKILL -> the run's first resumed step (the mark of its second attempt), and for
a restart also the new worker's launch -> that step.

    python bench/crash_bench.py [--repeats 3] [--pool prefork] [-c 2]
        [--lease-ttl-s 30] [--sweep-interval-s 30] [--no-write]

Writes the ``## Crash to resumed step`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import redis
from dispatch_bench import (
    FIRST_STEP_AGENT,
    Worker,
    attempt_mark,
    executus_env,
    started_at,
    worker_argv,
    write_agents_file,
)
from results import Machine, Target, med_range, write_section

from executus_worker.client import Client
from executus_worker.embedded import EmbeddedRedis
from executus_worker.settings import Settings

CASES = ("restart", "peer")


def _worker(url: str, args: argparse.Namespace, agents_file: Path, node: str) -> Worker:
    queue = Settings.model_construct().default_queue
    argv = worker_argv(
        "executus_worker.worker", queue, args.pool, args.concurrency, ["-n", f"{node}@%h"]
    )
    env = executus_env(
        url,
        agents_file,
        lease_ttl_s=str(args.lease_ttl_s),
        sweep_interval_s=str(args.sweep_interval_s),
    )
    return Worker(argv, env)


def _serving(client: Client, count: int, workers: list[Worker], timeout_s: float) -> None:
    """Wait until ``count`` live workers advertise the bench agent (they are consuming)."""
    deadline = time.monotonic() + timeout_s
    while len(client.agents().serving(FIRST_STEP_AGENT)) < count:
        for worker in workers:
            worker.alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} worker(s) did not start within {timeout_s}s")
        time.sleep(0.1)


def one(url: str, args: argparse.Namespace, agents_file: Path, case: str) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    r.flushall()
    a = _worker(url, args, agents_file, "crash-a")
    others: list[Worker] = []
    out: dict[str, float] = {}
    try:
        with Client.from_url(url) as client:
            _serving(client, 1, [a], args.timeout_s)
            steps = {"steps": 100_000, "step_s": args.step_s}  # far longer than the bench
            run_id = client.enqueue(agent=FIRST_STEP_AGENT, input=steps)
            started_at(r, attempt_mark(run_id, 1), [a], args.timeout_s)
            if case == "peer":
                others.append(_worker(url, args, agents_file, "crash-b"))
                _serving(client, 2, [a, *others], args.timeout_s)  # booted, consuming
            time.sleep(3 * args.step_s)  # mid-run: a few steps saved
            killed = time.time()
            a.crash()
            if case == "restart":
                launched = time.time()
                others.append(_worker(url, args, agents_file, "crash-a"))  # same node name
            wait_s = args.timeout_s + 2 * (args.lease_ttl_s + args.sweep_interval_s)
            resumed = started_at(r, attempt_mark(run_id, 2), others, wait_s)
            out["kill_to_step"] = resumed - killed
            if case == "restart":
                out["launch_to_step"] = resumed - launched
            client.cancel(run_id)  # lands at its next step; the stop below drains the rest
    finally:
        for worker in [a, *others]:
            worker.stop()
        r.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = Settings.model_construct()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--step-s", type=float, default=0.2)
    parser.add_argument("--lease-ttl-s", type=float, default=defaults.lease_ttl_s)
    parser.add_argument("--sweep-interval-s", type=float, default=defaults.sweep_interval_s)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if unknown := set(cases) - set(CASES):
        raise SystemExit(f"unknown cases {sorted(unknown)}; choose from {CASES}")

    machine = Machine.capture()
    samples: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as tmp:
        agents_file = write_agents_file(Path(tmp) / "agents.toml")
        version = str(redis.Redis.from_url(server.url).info("server")["redis_version"])
        for repeat in range(args.repeats):
            for case in cases:
                sample = one(server.url, args, agents_file, case)
                samples[case].append(sample)
                print(f"repeat {repeat + 1} {case}: {sample}", flush=True)
    machine.finish(redis_version=version)

    def cell(case: str, key: str) -> str:
        values = [s[key] for s in samples.get(case, []) if key in s]
        return med_range(values, nd=2, unit="s") if values else "--"

    body = "\n".join(
        [
            f"`python bench/crash_bench.py --repeats {args.repeats} --pool {args.pool} -c "
            f"{args.concurrency}`, lease TTL {args.lease_ttl_s:g} s, sweep every "
            f"{args.sweep_interval_s:g} s, a step every {args.step_s:g} s; private "
            "redis-server, real `celery worker` processes on this host. A few steps into a "
            "run, its worker and pool children are SIGKILLed together. *restart*: a worker "
            "started right after the crash under the same node name (the old owner is "
            "provably gone: it takes the run back at boot). *peer*: a second worker already "
            "running (a worker that cannot prove the owner dead waits for the lease to expire "
            "and its next sweep). Median (min-max) over the repeats.",
            "",
            "| way back | SIGKILL → first resumed step | new worker's launch → that step |",
            "|---|---:|---:|",
            f"| restart on this host, same node name | {cell('restart', 'kill_to_step')} "
            f"| {cell('restart', 'launch_to_step')} |",
            f"| a peer worker, lease-bound | {cell('peer', 'kill_to_step')} | -- |",
        ]
    )
    print(body)
    targets = []
    restart = [s["kill_to_step"] for s in samples.get("restart", [])]
    if restart:
        value = f"restart: {cell('restart', 'kill_to_step')} after SIGKILL"
        if samples.get("peer"):
            value += f"; a peer, lease-bound: {cell('peer', 'kill_to_step')}"
        # Met when no restart waited for the lease: every one resumed before it could expire.
        targets.append(Target("crash.resume", value, max(restart) < args.lease_ttl_s))
    if not args.no_write:
        write_section("Crash to resumed step", body, machine, targets)
        print("wrote the Crash to resumed step section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
