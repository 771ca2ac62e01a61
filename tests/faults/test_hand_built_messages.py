"""Hand-built messages next to healthy runs in flight.

Another service may LPUSH a task message it built itself, without the ``delivery_info`` kombu
writes on publish. Stock kombu raised ``KeyError('exchange')`` for it, which counts as a
connection loss: the runs in flight on that worker were terminated and the message vanished
without a log line. The invariant: a bad message costs at most that message; the healthy
runs finish untouched; a hand-built message is delivered, and one that cannot be is logged by
queue and a short description (never its payload) and only wakes the run it names (the stored
run is the truth: see worker/runs.py).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from e2e.harness import Cluster, wait_for

from executus_worker.core.models import RunRequest
from executus_worker.publish import TASK_RUN, build_envelope

from .workers import assert_completed_exactly, assert_keeps_consuming, check_workers

pytestmark = pytest.mark.faults

SECRET = "do-not-log-this-payload"


def _hand_built(cluster: Cluster, properties: dict[str, Any] | None) -> tuple[str, str]:
    """A registered run and a message for it whose delivery_info is replaced (None: removed)."""
    run_id = f"hand-{uuid.uuid4().hex[:8]}"
    request = RunRequest(
        run_id=run_id,
        agent="e2e.counter",
        input={"steps": 3, "step_s": 0.05},
        metadata={"note": SECRET},
    )
    cluster.store.register(request, run_id=run_id, queue=cluster.queue, now=time.time())
    message = json.loads(build_envelope(TASK_RUN, [run_id, request.to_json()], queue=cluster.queue))
    message["properties"].pop("delivery_info")
    if properties is not None:
        message["properties"]["delivery_info"] = properties
    return run_id, json.dumps(message)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_hand_built_messages_are_delivered_and_healthy_runs_are_untouched(
    fault_cluster: Cluster, pool: str
) -> None:
    cluster = fault_cluster
    worker = cluster.start(pool, concurrency=4)
    healthy = {cluster.submit("e2e.counter", steps=12, step_s=0.25): 12 for _ in range(2)}
    for run_id in healthy:
        cluster.wait_steps_ended(run_id, 2)

    deliverable = [
        _hand_built(cluster, None),  # no delivery_info at all
        _hand_built(cluster, {}),  # present but empty
        _hand_built(cluster, {"exchange": None, "routing_key": None}),
    ]
    undeliverable_id, undeliverable = _hand_built(cluster, "not an object")  # type: ignore[arg-type]
    cluster.client.lpush(cluster.queue, *(raw for _, raw in deliverable), undeliverable)

    expected = {run_id: 3 for run_id, _ in deliverable} | {undeliverable_id: 3}
    assert_completed_exactly(cluster, expected, [worker], timeout_s=30)
    assert_completed_exactly(cluster, healthy, [worker], timeout_s=30)
    for run_id in healthy:  # never interrupted, never re-run: one attempt, one owner
        record = cluster.record(run_id)
        assert (record.attempts, record.epoch) == (1, 1), run_id
        assert len({e["pid"] for e in cluster.steps(run_id, "start")}) == 1

    text = worker.text()
    assert (
        f"rejected a malformed message on queue {cluster.queue} (delivery_info is not an object)"
        in text
    )
    assert SECRET not in text
    assert "Connection to broker lost" not in text
    # Every delivered message was acked: nothing left for a visibility-timeout redelivery.
    wait_for(
        "no unacked message of this queue",
        lambda: (
            not any(json.loads(raw)[2] == cluster.queue for raw in cluster.client.hvals("unacked"))
        ),
        10,
    )
    check_workers([worker])
    assert_keeps_consuming(cluster, worker)
