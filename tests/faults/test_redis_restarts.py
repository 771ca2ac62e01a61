"""Redis -- broker and run store on one server -- restarted twice under load.

Each worker has runs in flight *and* a free slot when Redis goes away: the state in which
stock kombu 5.7 killed the worker (its consumer's close path raised AttributeError, which
Celery treats as unrecoverable). The invariant: every worker rides through and keeps
consuming; every run completes with an exact transcript; none ends dead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from e2e.harness import Cluster, counter_transcript

from executus_worker.core.models import RunStatus

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


def _unacked_runs(cluster: Cluster) -> list[str]:
    """The run ids of this cluster's messages in kombu's unacked hash."""
    assert cluster.broker is not None
    found = []
    for raw in cluster.broker.hvals("unacked"):
        message, _, queue = json.loads(raw)
        if queue == cluster.queue:
            found.append(message["headers"]["id"])
    return found


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_a_rollback_that_undoes_a_settled_ending_runs_the_rest_again_exactly(
    fault_redis: RedisServer, redis_url: str, tmp_path: Path, pool: str
) -> None:
    """On solo and threads pools FINISH settles the run's message (checkpoint/settle.py): the
    unacked entry goes with the ending and the ack stays in memory. Redis then rolls back to a
    snapshot taken mid-run: the ending and the settle are undone together -- the run is
    `running` under a lease nobody renews, its message unacked again. The lease lapses, the
    sweep re-publishes, the run resumes from the checkpoint the snapshot kept and completes
    exactly; the message that came back is never executed as well."""
    # The step log on the session's Redis: the rollback must not take the evidence with it.
    cluster = Cluster(fault_redis.url, tmp_path, steps_url=redis_url)
    try:
        worker = cluster.start(pool)
        run_id = cluster.submit("e2e.counter", steps=8, step_s=0.15)
        cluster.wait_steps_ended(run_id, 3)
        snapshot = fault_redis.snapshot()
        assert _unacked_runs(cluster) == [run_id]
        cluster.wait_status(run_id, RunStatus.COMPLETED)
        assert _unacked_runs(cluster) == []  # settled with the ending

        fault_redis.rollback(snapshot)
        assert cluster.record(run_id).status is RunStatus.RUNNING  # the ending is gone...
        assert _unacked_runs(cluster) == [run_id]  # ...and the settle with it

        assert_completed_exactly(cluster, {run_id: 8}, [worker], timeout_s=60)
        record = cluster.record(run_id)
        assert record.attempts == 2 and record.epoch == 2  # recovered once, from the lease
        assert_one_owner_at_a_time(cluster, [run_id])
        first, second = ([e["msg"] for e in cluster.steps(run_id, "end") if e["epoch"] == n]
                         for n in (1, 2))  # fmt: skip
        # The second attempt redid only what the rollback took: from the step after the
        # snapshot's checkpoint (step 3, or 4 if its save landed before the snapshot).
        assert first == counter_transcript(8), first
        assert second in (counter_transcript(8)[3:], counter_transcript(8)[4:]), second
        assert_keeps_consuming(cluster, worker)
    finally:
        cluster.close()
