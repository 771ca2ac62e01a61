"""One owner under the faults that break naive leases: a partition that drops packets, a tool
that holds the GIL past the lease, and Redis rolled back to an older snapshot.

Each asserts the invariant itself: no step (model call) or tool side effect of a stale claim
starts after another claim took the run, transcripts are exact, and the stale owner's
attempt is not booked as a crash.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e.harness import AGENTS_TOML, Cluster, counter_transcript, wait_for

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import ClaimStatus, Fence
from executus_worker.core.models import Checkpoint, Message, RunRequest, RunStatus
from executus_worker.core.stop import OwnershipLost

from .proxy import TcpProxy
from .redis_server import RedisServer
from .workers import (
    assert_completed_exactly,
    assert_keeps_consuming,
    assert_one_owner_at_a_time,
    check_workers,
)

pytestmark = pytest.mark.faults

HERE = Path(__file__).resolve().parent


def _claims(cluster: Cluster, run_id: str, ev: str = "start") -> dict[str, list[float]]:
    """fence -> times of its events of kind ``ev``."""
    out: dict[str, list[float]] = {}
    for event in cluster.steps(run_id, ev):
        out.setdefault(event["fence"], []).append(event["t"])
    return out


def test_a_partitioned_owner_stops_before_another_claim_steps(
    fault_redis: RedisServer, fault_cluster: Cluster, timing
) -> None:
    """Worker A reaches Redis (store and broker) through a proxy that starts dropping every
    packet mid-run. A's saves hang and its renewals fail, so it pauses; B takes the run when
    the lease lapses. A never starts another step, and once the partition heals A is fenced,
    records that it survived (no crash counted) and keeps consuming."""
    cluster = fault_cluster
    with TcpProxy(fault_redis.port, lifetime_s=180) as proxy:
        a = cluster.start("threads", EXECUTUS_REDIS_URL=proxy.url())
        run_id = cluster.submit("e2e.counter", steps=14, step_s=0.25)
        cluster.wait_steps_ended(run_id, 3)
        proxy.set_mode("drop")
        dropped_at = time.time()
        b = cluster.start("threads")
        wait_for("B to take the run", lambda: len(_claims(cluster, run_id)) == 2, 30)
        time.sleep(2.0)  # B steps on while A is still cut off
        proxy.set_mode("pass")
        assert_completed_exactly(cluster, {run_id: 14}, [a, b], timeout_s=60)

        claims = _claims(cluster, run_id)
        old, new = sorted(claims, key=lambda fence: min(claims[fence]))
        timing("partition -> new owner's first step", min(claims[new]) - dropped_at)
        assert max(claims[old]) < min(claims[new]), "the cut-off owner stepped after the takeover"
        assert_one_owner_at_a_time(cluster, [run_id])
        assert cluster.record(run_id).attempts == 2
        # A survived its partition: the takeover was not booked as a crash.
        wait_for(
            "A to record that it survived",
            lambda: cluster.client.hget(cluster.store.keys.rec(run_id), "survived") == b"1",
            30,
        )
        check_workers([a, b])
        b.signal(15)
        b.wait_exit(timeout_s=30)
        assert_keeps_consuming(cluster, a)  # A, through the healed proxy


def test_a_tool_holding_the_gil_past_the_lease_starts_no_side_effect_after_the_takeover(
    fault_redis: RedisServer, fault_cluster: Cluster, tmp_path: Path
) -> None:
    """Step 2 of the first claim calls a tool that holds the GIL for 6 s (lease 2 s): the
    renewal thread cannot run, the lease lapses, B claims the run. When the tool returns, A's
    guard before the next tool call finds its lease uncertain, asks, learns it was lost and
    stops: the side effect of step 2 is never started by A."""
    cluster = fault_cluster
    agents = tmp_path / "lease_agents.toml"
    agents.write_text(AGENTS_TOML + '"fault.effects" = "lease_agents:effects"\n')
    cluster.settings["EXECUTUS_AGENTS_FILE"] = str(agents)
    cluster.settings["PYTHONPATH"] = str(HERE)
    a = cluster.start("threads")
    run_id = cluster.submit("fault.effects", steps=5)
    wait_for("the GIL-holding step", lambda: len(cluster.steps(run_id, "end")) >= 2, 30)
    b = cluster.start("threads")
    assert_status = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=60)
    assert assert_status.attempts == 2

    effects = cluster.steps(run_id, "effect")
    starts = _claims(cluster, run_id)
    first, second = sorted(starts, key=lambda fence: min(starts[fence]))
    taken_at = min(starts[second])
    stale = [e for e in effects if e["fence"] == first and e["t"] >= taken_at]
    assert stale == [], f"side effects of the stale claim after the takeover: {stale}"
    assert [e["key"] for e in effects if e["fence"] == first] == [f"{run_id}:1:effect-1"]
    # Every step's effect ran once per claim that completed it, under a stable key.
    assert sorted({e["key"] for e in effects}) == sorted(
        f"{run_id}:{i}:effect-{i}" for i in range(1, 6)
    )
    transcript = cluster.store.transcript(run_id)
    assert [m.content for m in transcript if m.role == "assistant"] == [
        f"step {i}" for i in range(1, 6)
    ]
    # Never an assistant tool call without its result.
    for i, message in enumerate(transcript):
        for call in message.tool_calls:
            assert any(m.tool_call_id == call.id for m in transcript[i + 1 :]), call
    check_workers([a, b])


def test_redis_rolled_back_under_a_live_claim_loses_no_step(
    fault_redis: RedisServer, fault_cluster: Cluster
) -> None:
    """Redis restarts from a snapshot taken three steps ago while the worker holds the claim:
    the owner detects that its last writes are gone and rewrites what it holds, or -- if the
    run was requeued meanwhile -- is fenced and the next claim resumes from what Redis kept.
    Either way the transcript is exact."""
    cluster = fault_cluster
    worker = cluster.start("threads")
    run_id = cluster.submit("e2e.counter", steps=14, step_s=0.2)
    cluster.wait_steps_ended(run_id, 3)
    snapshot = fault_redis.snapshot()
    cluster.wait_steps_ended(run_id, 7)
    fault_redis.rollback(snapshot)
    assert_completed_exactly(cluster, {run_id: 14}, [worker], timeout_s=60)
    assert_one_owner_at_a_time(cluster, [run_id])
    assert_keeps_consuming(cluster, worker)


def test_an_outage_longer_than_the_lease_burns_no_attempt(
    fault_redis: RedisServer, fault_cluster: Cluster
) -> None:
    """Redis is down for twice the lease, with EXECUTUS_MAX_RECOVERY_ATTEMPTS=1 (no crash
    tolerated at all). The owner survives the outage; whether it takes its lapsed lease back
    or is replaced meanwhile, the run completes exactly and is never declared dead."""
    cluster = fault_cluster
    cluster.settings["EXECUTUS_MAX_RECOVERY_ATTEMPTS"] = "1"
    worker = cluster.start("threads", concurrency=3)
    runs = {cluster.submit("e2e.counter", steps=12, step_s=0.2): 12 for _ in range(2)}
    for run_id in runs:
        cluster.wait_steps_ended(run_id, 2)
    fault_redis.kill()
    time.sleep(4.0)  # lease TTL 2 s: every lease lapses while Redis is away
    fault_redis.start()
    assert_completed_exactly(cluster, runs, [worker], timeout_s=60)
    for run_id in runs:
        record = cluster.record(run_id)
        survived = int(cluster.client.hget(cluster.store.keys.rec(run_id), "survived") or 0)
        assert record.attempts - survived == 1, (record.attempts, survived)
    assert_one_owner_at_a_time(cluster, list(runs))
    assert_keeps_consuming(cluster, worker)


def test_an_epoch_handed_out_twice_after_a_rollback_never_lets_the_stale_owner_write(
    fault_redis: RedisServer,
) -> None:
    """The issue's reproduction on a real redis-server: a claim is lost to a rollback, the next
    claim gets the *same epoch* as the lost one, and the lost claim's owner -- still running --
    tries to write. The random fence rejects it; the new owner's writes land."""
    client = fault_redis.client()
    store = RedisStore(client, key_prefix="rollback")
    store.register(RunRequest(agent="demo.counter"), run_id="r", queue="q", now=time.time())

    def claim(owner: str) -> Fence:
        result = store.claim("r", owner=owner, lease_ttl_s=0.3, max_attempts=9, now=time.time())
        assert result.status is ClaimStatus.CLAIMED and result.fence is not None, result
        return result.fence

    def save(fence: Fence, base: int, text: str) -> None:
        store.save_checkpoint(
            "r", fence=fence, base_len=base, new_messages=[Message(role="assistant", content=text)],
            checkpoint=Checkpoint(run_id="r"), now=time.time(),
        )  # fmt: skip

    a = claim("a")
    save(a, 0, "step 1")
    snapshot = fault_redis.snapshot()
    time.sleep(0.4)  # a stalls past its lease
    b = claim("b")
    save(b, 1, "step 2 by b")
    fault_redis.rollback(snapshot)  # b's claim is forgotten
    client = fault_redis.client()
    store = RedisStore(client, key_prefix="rollback")
    time.sleep(0.4)
    c = claim("c")
    assert c.epoch == b.epoch and c.token != b.token  # the same epoch, handed out twice
    with pytest.raises(OwnershipLost):
        save(b, 1, "step 2 by b, again")
    with pytest.raises(OwnershipLost):
        save(a, 1, "step 2 by a")
    save(c, 1, "step 2")
    assert [m.content for m in store.transcript("r")] == counter_transcript(2)
