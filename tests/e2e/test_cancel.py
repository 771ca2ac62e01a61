"""Cancel lands at the run's next step boundary, on the save reply the run waits for anyway.

The lease is long (30 s, so a renewal only every 10 s): a cancel that had to wait for a
heartbeat would let the run take ~30 more steps of 0.3 s. It must stop after at most one more.
"""

from __future__ import annotations

import time

import pytest

from executus_worker.core.models import RunStatus

from .harness import Cluster

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_cancel_stops_the_run_at_its_next_step_boundary(
    cluster: Cluster, pool: str, timing
) -> None:
    cluster.settings["EXECUTUS_LEASE_TTL_S"] = "30"
    cluster.start(pool)
    run_id = cluster.submit("e2e.counter", steps=40, step_s=0.3)
    cluster.wait_steps_ended(run_id, 3)
    asked_at = time.time()
    cluster.store.request_cancel(run_id, now=asked_at)
    ended_before = len(cluster.ended(run_id))
    record = cluster.wait_status(run_id, RunStatus.CANCELLED, timeout_s=20)
    timing(f"{pool}: cancel -> cancelled", (record.finished_at or 0) - asked_at)
    # The step in flight may finish (its save carries the flag back); no further step starts.
    assert len(cluster.ended(run_id)) <= ended_before + 1
    assert len(cluster.steps(run_id, "start")) <= ended_before + 1
    assert cluster.store.load_checkpoint(run_id) is None
    assert cluster.keys_without_ttl(run_id) == []
