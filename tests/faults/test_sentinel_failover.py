"""Redis Sentinel: run state and broker behind real sentinels, a failover forced mid-run.

The group is a master, one replica and two sentinels started by the test on free loopback
ports; workers and the test reach it only through a ``sentinel://`` URL naming both
sentinels. ``SENTINEL FAILOVER`` promotes the replica while runs are stepping. The invariant:
every run completes with an exact transcript, one owner at a time, and a writer whose claim
was taken over is refused by the new master just as by the old one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import Cluster

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence
from executus_worker.core.models import Checkpoint, Message, RunRequest
from executus_worker.core.stop import OwnershipLost
from executus_worker.redis_connect import connect

from .redis_server import RedisUnavailable
from .sentinel import MASTER_NAME, SentinelGroup
from .workers import (
    assert_completed_exactly,
    assert_keeps_consuming,
    assert_one_owner_at_a_time,
    wait_for_progress,
)

pytestmark = pytest.mark.faults

# Long enough to outlast the split window (up to ~11 s) with steps to spare.
STEPS = 45  # under the default limits.max_iterations (50)
STEP_S = 0.35


def claimed(store: RedisStore, owner: str) -> Fence:
    result = store.claim("r1", owner=owner, lease_ttl_s=30, max_attempts=5, now=time.time())
    assert result.fence is not None, result
    return result.fence


def save(store: RedisStore, fence: Fence, base_len: int, text: str) -> None:
    store.save_checkpoint(
        "r1",
        fence=fence,
        base_len=base_len,
        new_messages=[Message(role="assistant", content=text)],
        checkpoint=Checkpoint(run_id="r1", epoch=fence.epoch),
        now=time.time(),
    )


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "ha", sentinels=2)
    try:
        group.start()
    except RedisUnavailable as exc:
        group.stop()
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"CI=true and no Redis Sentinel group: {exc}", pytrace=False)
        pytest.skip(f"NO REDIS SENTINEL -- sentinel tests skipped: {exc}")
    yield group
    group.stop()


@pytest.mark.timeout(60)
def test_a_taken_over_writer_is_fenced_on_the_new_master(sentinels: SentinelGroup) -> None:
    client = connect(sentinels.url, sentinel_master=MASTER_NAME, socket_timeout=5)
    store = RedisStore(client, key_prefix=f"ha{os.getpid()}")
    try:
        store.register(
            RunRequest(agent="demo.counter", input={"steps": 3}),
            run_id="r1",
            queue="executus",
            now=time.time(),
        )
        first = claimed(store, owner="w1")
        save(store, first, 0, "step 1")
        client.execute_command("WAIT", 1, 5000)  # the claim is on the replica before it rises
        old_port = sentinels.master_port()
        assert sentinels.failover() != old_port
        # The same client object now talks to the new master.
        assert [m.content for m in store.transcript("r1")] == ["step 1"]
        client.delete(store.keys.lease("r1"))  # the first owner's lease lapsed
        second = claimed(store, owner="w2")
        assert second.epoch == first.epoch + 1
        with pytest.raises(OwnershipLost):
            save(store, first, 1, "stale step 2")
        save(store, second, 1, "step 2")
        assert [m.content for m in store.transcript("r1")] == ["step 1", "step 2"]
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_runs_finish_exactly_across_a_forced_sentinel_failover(
    sentinels: SentinelGroup, redis_url: str, tmp_path: Path, timing
) -> None:
    """Worker A keeps its connections to the old master through the split window (the old
    master stays a writable master until the sentinels convert it); worker B starts inside
    that window and sees only the new master, where A's leases are the replicated copies.
    With the default lease TTL those outlive the window, so B takes nothing over; A's writes
    made on the old master are dropped when it converts, and A rewrites them on the new one."""
    # Run state and broker both through the sentinels; the step log on a plain Redis.
    cluster = Cluster(sentinels.url, tmp_path, sentinel_master=MASTER_NAME, steps_url=redis_url)
    cluster.settings["EXECUTUS_LEASE_TTL_S"] = "30"  # the default: see ops/README
    try:
        a = cluster.start("prefork", concurrency=3)
        runs = [cluster.submit("e2e.counter", steps=STEPS, step_s=STEP_S) for _ in range(2)]
        for run_id in runs:
            cluster.wait_steps_ended(run_id, 2)
        old_port = sentinels.master_port()
        started = time.monotonic()
        assert sentinels.force_failover() != old_port
        b = cluster.start("threads", concurrency=2)  # its sweep runs against the new master
        sentinels.wait_demoted()
        demoted_at = time.time()
        timing("failover forced until the old master converted", time.monotonic() - started)
        # The runs were still stepping when the old master converted: they crossed it.
        wait_for_progress(cluster, runs, [a, b], since=demoted_at, timeout_s=20)
        assert_completed_exactly(cluster, dict.fromkeys(runs, STEPS), [a, b], timeout_s=30)
        timing("runs done after the failover began", time.monotonic() - started)
        assert_one_owner_at_a_time(cluster, runs)
        stepped = {e["pid"] for run_id in runs for e in cluster.steps(run_id, "start")}
        assert stepped <= a.pids(), "worker B took over a run whose owner was alive"
        b.stop()
        assert_keeps_consuming(cluster, a)
    finally:
        cluster.close()
