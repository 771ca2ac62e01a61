"""Real workers with run state on a three-master Redis Cluster and the broker on a plain Redis
(SIGTERM and SIGKILL on the cluster are parametrized into test_warm_shutdown.py and
test_crash_recovery.py)."""

from __future__ import annotations

import pytest

from executus_worker.core.models import RunStatus

from .harness import Cluster, counter_transcript, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("cluster", ["redis-cluster"], indirect=True)
def test_runs_on_every_master_complete_exactly_once(cluster: Cluster) -> None:
    cluster.start("threads", concurrency=4)
    runs = [cluster.submit("e2e.counter", steps=4, step_s=0.05) for _ in range(12)]
    masters = {cluster.client.get_node_from_key(cluster.store.keys.rec(r)).name for r in runs}
    assert len(masters) == 3  # 12 runs in 64 partitions: every master holds some (checked)
    for run_id in runs:
        final = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=60)
        assert final.output == "done 4" and final.attempts == 1
        assert cluster.transcript(run_id) == counter_transcript(4)
        assert cluster.ended(run_id) == counter_transcript(4)  # each step ran once
        assert cluster.keys_without_ttl(run_id) == []
    assert cluster.client.get(cluster.store.keys.layout) == b"v1 shards=64"
    assert {r.run_id for r in cluster.store.list_runs(status=RunStatus.COMPLETED)} == set(runs)


@pytest.mark.parametrize("cluster", ["redis-cluster"], indirect=True)
def test_a_worker_set_for_another_partition_count_refuses_to_start(cluster: Cluster) -> None:
    cluster.start("solo")  # records the layout: 64 partitions
    other = cluster.start("solo", ready=False, EXECUTUS_REDIS_SHARDS="16")
    wait_for("the worker to exit", lambda: not other.alive(), 30)
    assert other.proc.returncode == 78
    assert "refusing to start" in other.text() and "EXECUTUS_REDIS_SHARDS" in other.text()
