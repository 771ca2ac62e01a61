"""Chaos soak: three workers, a few hundred runs, random kills and two Redis restarts.

Runs are submitted before and during the chaos. Every few seconds one fault hits: SIGTERM or
SIGKILL of a worker's main process (a replacement is started), SIGKILL of a prefork child, or
-- exactly twice -- a Redis restart (one clean SHUTDOWN, one SIGKILL; AOF everysec). At the end
every run must be terminal and completed with an exact transcript, no two claims of one run
may have stepped at the same time, no key of a finished run may lack a TTL, and every worker
standing must still consume.

CI runs a short soak (``CHAOS_S``, default 45 s of faults); ``make chaos`` runs a long one
(``CHAOS_S=600 CHAOS_RUNS=600``) and prints the summary table. ``CHAOS_SEED`` replays a soak.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from e2e.harness import Cluster, Worker

from .redis_server import RedisServer
from .workers import (
    assert_completed_exactly,
    assert_one_owner_at_a_time,
    check_workers,
)

pytestmark = pytest.mark.faults

CHAOS_S = float(os.environ.get("CHAOS_S", "45"))
RUNS = int(os.environ.get("CHAOS_RUNS", "180"))
SEED = int(os.environ.get("CHAOS_SEED", str(int(time.time()))))
POOLS = ("prefork", "threads", "solo")


@dataclass
class Soak:
    cluster: Cluster
    redis: RedisServer
    rng: random.Random
    workers: dict[str, Worker] = field(default_factory=dict)  # pool -> current worker
    runs: dict[str, int] = field(default_factory=dict)  # run id -> steps
    actions: Counter[str] = field(default_factory=Counter)
    log: list[str] = field(default_factory=list)

    def start(self, pool: str) -> None:
        self.workers[pool] = self.cluster.start(pool, concurrency=2)

    def submit(self, n: int) -> None:
        for _ in range(n):
            steps = self.rng.randint(2, 6)
            step_s = self.rng.choice((0.02, 0.05, 0.1, 0.2))
            self.runs[self.cluster.submit("e2e.counter", steps=steps, step_s=step_s)] = steps

    def note(self, what: str) -> None:
        self.actions[what] += 1
        self.log.append(f"{time.strftime('%H:%M:%S')} {what}")

    def hit(self) -> None:
        """One random fault on one worker; the worker is replaced where it went away."""
        pool = self.rng.choice(POOLS)
        worker = self.workers[pool]
        action = self.rng.choice(("sigterm", "sigkill", "sigkill-host", "child"))
        if action == "child" and pool != "prefork":
            action = "sigkill"
        if action == "child":
            children = worker.children()
            if not children:
                return
            os.kill(self.rng.choice(children), signal.SIGKILL)  # billiard replaces it
            self.note("SIGKILL prefork child")
            return
        if action == "sigkill-host":  # main process and its children at once
            for child in worker.children():
                os.kill(child, signal.SIGKILL)
        worker.signal(signal.SIGTERM if action == "sigterm" else signal.SIGKILL)
        worker.wait_exit(timeout_s=60)
        self.note(f"{action} {pool} main")
        self.start(pool)


@pytest.mark.timeout(int(CHAOS_S) + 900)
def test_chaos_soak(fault_redis: RedisServer, fault_cluster: Cluster, timing) -> None:
    cluster = fault_cluster
    cluster.settings.update(
        {
            # Random kills hit the same run now and then; only real deaths count, but a
            # short soak must not end a run as dead by bad luck.
            "EXECUTUS_MAX_RECOVERY_ATTEMPTS": "25",
            "EXECUTUS_SHUTDOWN_GRACE_S": "5",
        }
    )
    soak = Soak(cluster, fault_redis, random.Random(SEED))
    soak.log.append(f"seed {SEED}")
    for pool in POOLS:
        soak.start(pool)
    soak.submit(RUNS // 2)

    started = time.monotonic()
    restarts_at = (CHAOS_S * 0.3, CHAOS_S * 0.7)
    restarts_done = 0
    while (elapsed := time.monotonic() - started) < CHAOS_S:
        if restarts_done < len(restarts_at) and elapsed >= restarts_at[restarts_done]:
            fault_redis.restart(kill=restarts_done == 1, down_s=1.0)
            soak.note("Redis restart (" + ("SIGKILL" if restarts_done else "SHUTDOWN") + ")")
            restarts_done += 1
        else:
            soak.hit()
        if len(soak.runs) < RUNS:
            soak.submit(min(RUNS - len(soak.runs), max(1, RUNS // 12)))
        time.sleep(soak.rng.uniform(1.5, 4.0))
    while restarts_done < len(restarts_at):  # a very short CHAOS_S still restarts twice
        fault_redis.restart(kill=restarts_done == 1, down_s=1.0)
        soak.note("Redis restart")
        restarts_done += 1
    soak.submit(RUNS - len(soak.runs))

    standing = list(soak.workers.values())
    settle = time.monotonic()
    assert_completed_exactly(cluster, soak.runs, standing, timeout_s=240)
    timing("runs all completed after the last fault", time.monotonic() - settle)
    assert_one_owner_at_a_time(cluster, list(soak.runs))
    check_workers(standing)
    # Every worker standing still consumes: enough fresh runs that each one takes some.
    fresh = {cluster.submit("e2e.counter", steps=3, step_s=0.3): 3 for _ in range(12)}
    assert_completed_exactly(cluster, fresh, standing, timeout_s=60)
    ran = {e["pid"] for run_id in fresh for e in cluster.steps(run_id, "start")}
    idle = [w.name for w in standing if not ran & w.pids()]
    assert not idle, f"workers that took none of 12 fresh runs: {idle}"

    attempts = Counter(cluster.record(run_id).attempts for run_id in soak.runs)
    summary = [
        f"chaos soak: seed {SEED}, {CHAOS_S:.0f}s of faults, {len(soak.runs)} runs, "
        f"all completed exactly, one owner at a time",
        *(f"  {n:4d} x {what}" for what, n in sorted(soak.actions.items())),
        "  attempts per run: " + ", ".join(f"{k}: {v}" for k, v in sorted(attempts.items())),
    ]
    print("\n".join(summary))
    timing("soak wall time", time.monotonic() - started)
