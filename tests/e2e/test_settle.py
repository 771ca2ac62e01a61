"""A run's ending settles its Redis broker message (checkpoint/settle.py), with real workers.

On the solo and threads pools the FINISH script removes the message's unacked entry and the
consumer's ack needs no round trip; on prefork the parent acks as before. Either way no
finished run leaves an unacked message behind.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from executus_worker.core.models import RunStatus

from .harness import Cluster, counter_transcript, wait_for

pytestmark = pytest.mark.e2e

RUNS = 30


def _execs(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


def _unacked_for(cluster: Cluster) -> list[str]:
    assert cluster.broker is not None
    return [
        tag.decode()
        for tag, raw in cluster.broker.hgetall("unacked").items()
        if json.loads(raw)[2] == cluster.queue
    ]


def _claimed_owner_pid(cluster: Cluster, run_id: str) -> int:
    entries = cluster.client.xrange(cluster.store.keys.events(run_id))
    claimed = [json.loads(f[b"data"]) for _, f in entries if f[b"event"] == b"claimed"]
    return int(claimed[0]["owner"].split(":")[1])


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_finished_runs_leave_no_unacked_message(cluster: Cluster, pool: str) -> None:
    assert cluster.broker is not None
    worker = cluster.start(pool, concurrency=2)
    before = _execs(cluster.broker)
    run_ids = [cluster.submit("e2e.counter", steps=1, step_s=0) for _ in range(RUNS)]
    failing = cluster.submit("e2e.counter", steps="not a number")
    for run_id in run_ids:
        cluster.wait_status(run_id, RunStatus.COMPLETED)
    assert cluster.wait_status(failing, RunStatus.FAILED).error
    if pool == "prefork":
        # The main process acks once the child's result reaches it, just after FINISH.
        wait_for("the last acks", lambda: _unacked_for(cluster) == [], 10)
    execs = _execs(cluster.broker) - before

    assert _unacked_for(cluster) == []  # on solo and threads: gone with FINISH itself
    for run_id in run_ids:
        assert cluster.transcript(run_id) == counter_transcript(1)
    # kombu records each message as unacked with one MULTI/EXEC and acks it with another.
    # Settled in FINISH, the ack's is gone; a few more come from the worker's own
    # bookkeeping (its directory entry).
    if pool == "prefork":
        assert execs >= 2 * (RUNS + 1), execs
        # Claimed by the child that ran it, never on receipt by the main process: the owner
        # must name the executing process (worker/preclaim.py, worker/identity.py).
        owner_pid = _claimed_owner_pid(cluster, run_ids[0])
        assert owner_pid == cluster.steps(run_ids[0], "start")[0]["pid"] != worker.pid
    else:
        assert RUNS + 1 <= execs < 1.5 * (RUNS + 1), execs


def test_a_separate_broker_is_acked_as_usual(cluster: Cluster, redis_url: str) -> None:
    """State and broker on different databases of one server: not the same place, so FINISH
    settles nothing and kombu acks every message itself."""
    other = redis_url.rsplit("/", 1)[0] + "/5"
    broker = redis.Redis.from_url(other)
    (cluster.tmp_path / "separate").mkdir()
    world = Cluster(redis_url, cluster.tmp_path / "separate", broker_url=other)
    try:
        world.start("solo")
        before = _execs(broker)
        run_ids = [world.submit("e2e.counter", steps=1, step_s=0) for _ in range(10)]
        for run_id in run_ids:
            world.wait_status(run_id, RunStatus.COMPLETED)
        assert _execs(broker) - before >= 20
        assert _unacked_for(world) == []
    finally:
        world.close()
        broker.close()


@pytest.mark.parametrize("pool", ["solo", "threads", "prefork"])
def test_early_claims_still_run_each_run_once_by_its_executing_process(
    cluster: Cluster, pool: str
) -> None:
    """A solo worker claims on receipt (the claim rides in the unacked record's transaction);
    the others send the claim as the task starts and read it when the handler claims
    (preclaim.Ahead). Duplicates are still turned away, each run is claimed and executed
    exactly once, and the claim names the process that executes it."""
    worker = cluster.start(pool, concurrency=2)
    request = cluster.register("e2e.counter", steps=3, step_s=0.2)
    run_id = request.run_id
    assert run_id is not None
    cluster.publish(request, times=3)
    others = [cluster.submit("e2e.counter", steps=1, step_s=0) for _ in range(10)]
    record = cluster.wait_status(run_id, RunStatus.COMPLETED)
    for other in others:
        assert cluster.wait_status(other, RunStatus.COMPLETED).attempts == 1
    time.sleep(0.5)  # the duplicates are handled after the run: no second execution
    if pool == "prefork":
        wait_for("the last acks", lambda: _unacked_for(cluster) == [], 10)
    assert record.attempts == 1 and record.epoch == 1
    assert cluster.ended(run_id) == counter_transcript(3)
    (executor,) = {e["pid"] for e in cluster.steps(run_id, "start")}
    assert (executor == worker.pid) is (pool != "prefork")
    assert _claimed_owner_pid(cluster, run_id) == executor
    assert _unacked_for(cluster) == []
    assert cluster.record(run_id).status is RunStatus.COMPLETED
