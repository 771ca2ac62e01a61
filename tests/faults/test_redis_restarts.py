"""Redis -- broker and run store on one server -- restarted twice under load.

Each worker has runs in flight *and* a free slot when Redis goes away: the state in which
stock kombu 5.7 killed the worker (its consumer's close path raised AttributeError, which
Celery treats as unrecoverable). The invariant: every worker rides through and keeps
consuming; every run completes with an exact transcript; none ends dead.
"""

from __future__ import annotations

import time

import pytest
from e2e.harness import Cluster

from .redis_server import RedisServer
from .workers import (
    assert_completed_exactly,
    assert_keeps_consuming,
    assert_one_owner_at_a_time,
    wait_for_progress,
)

pytestmark = pytest.mark.faults

STEPS = 24
STEP_S = 0.25
DOWN_S = 1.0


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_workers_ride_through_two_redis_restarts_with_runs_in_flight(
    fault_redis: RedisServer, fault_cluster: Cluster, pool: str, timing
) -> None:
    cluster = fault_cluster
    # Two runs on three slots (solo: one run on its only slot): in flight, with room to spare.
    worker = cluster.start(pool, concurrency=3)
    in_flight = [
        cluster.submit("e2e.counter", steps=STEPS, step_s=STEP_S)
        for _ in range(1 if pool == "solo" else 2)
    ]
    for run_id in in_flight:
        cluster.wait_steps_ended(run_id, 2)
    started = time.monotonic()

    # A clean restart (SHUTDOWN NOSAVE; the AOF has everything), then a crash (SIGKILL).
    for kill in (False, True):
        restarted_at = time.time()
        fault_redis.restart(kill=kill, down_s=DOWN_S)
        wait_for_progress(cluster, in_flight, [worker], since=restarted_at, timeout_s=30)

    assert_completed_exactly(cluster, dict.fromkeys(in_flight, STEPS), [worker], timeout_s=45)
    timing(f"{pool}: runs done after the first restart", time.monotonic() - started)
    assert_one_owner_at_a_time(cluster, in_flight)
    # Duplicates are fenced by the claim, so a lost connection never kills a run in flight.
    assert "Terminating it instead" not in worker.text()
    assert_keeps_consuming(cluster, worker)
