"""Crashes with real workers: SIGKILL of a worker or a child, cold shutdown, poison runs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from executus_worker.core.models import RunStatus

from .harness import Cluster, counter_transcript, step_numbers, wait_for

pytestmark = pytest.mark.e2e

STEP_S = 0.4
LEASE_S = 2.0


def assert_resumed_exactly(cluster: Cluster, run_id: str, steps: int) -> None:
    """Exact transcript; the new owner resumed after the last checkpoint, not from scratch.
    Steps after the last checkpoint may have run twice (at-least-once step execution)."""
    assert cluster.transcript(run_id) == counter_transcript(steps)
    first = step_numbers(cluster.ended(run_id, epoch=1))
    resumed = step_numbers(cluster.ended(run_id, epoch=2))
    assert first == list(range(1, len(first) + 1))
    assert resumed == list(range(resumed[0], steps + 1))
    assert 2 <= resumed[0] <= len(first) + 1
    assert cluster.store.load_checkpoint(run_id) is None
    assert cluster.keys_without_ttl(run_id) == []


@pytest.mark.parametrize(
    ("pool", "signum", "cluster"),
    [
        ("prefork", signal.SIGKILL, "redis"),
        ("threads", signal.SIGKILL, "redis"),
        ("solo", signal.SIGKILL, "redis"),
        ("prefork", signal.SIGQUIT, "redis"),  # cold shutdown: tasks die, the lease expires
        # RabbitMQ requeues the dead worker's unacked message at once: the new worker drops
        # that copy while the lease lives, and the sweep's re-publish (kombu) resumes the run.
        ("prefork", signal.SIGKILL, "rabbitmq"),
        ("threads", signal.SIGKILL, "redis-cluster"),  # run state on a 3-master Redis Cluster
    ],
    ids=[
        "prefork-SIGKILL",
        "threads-SIGKILL",
        "solo-SIGKILL",
        "prefork-SIGQUIT",
        "prefork-SIGKILL-rabbitmq",
        "threads-SIGKILL-redis-cluster",
    ],
    indirect=["cluster"],
)
def test_a_killed_worker_is_recovered_by_another_workers_sweep_after_lease_expiry(
    cluster: Cluster, pool: str, signum: int, timing
) -> None:
    a = cluster.start(pool)
    run_id = cluster.submit("e2e.counter", steps=8, step_s=STEP_S)
    cluster.wait_steps_ended(run_id, 2)
    killed_at = time.time()
    if pool == "prefork" and signum == signal.SIGKILL:
        # The whole host goes: children first (a child whose main process alone dies drains
        # itself cleanly instead: test_an_orphaned_prefork_child_interrupts_its_run_cleanly).
        for pid in a.children():
            os.kill(pid, signal.SIGKILL)
    a.signal(signum)
    a.wait_exit(timeout_s=20)
    # Started after the kill: starting a worker takes longer than the whole run on a loaded box.
    b = cluster.start("threads")
    cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=40)
    resumed_at = min(e["t"] for e in cluster.steps(run_id) if e["epoch"] == 2)
    timing(f"{pool} {signal.Signals(signum).name}: recovered after", resumed_at - killed_at)
    # Nobody took the run while its lease (renewed every TTL/3) could still be live; the
    # bound is loose because a loaded box delays renewals.
    assert resumed_at - killed_at >= LEASE_S / 4
    assert {e["pid"] for e in cluster.steps(run_id) if e["epoch"] == 2} <= {b.pid}
    assert_resumed_exactly(cluster, run_id, 8)


def test_a_killed_prefork_child_is_replaced_and_its_run_recovered(cluster: Cluster, timing) -> None:
    a = cluster.start("prefork")
    run_id = cluster.submit("e2e.counter", steps=8, step_s=STEP_S)
    cluster.wait_steps_ended(run_id, 2)
    (child,) = {e["pid"] for e in cluster.steps(run_id)}
    killed_at = time.time()
    os.kill(child, signal.SIGKILL)
    cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=40)
    timing("prefork child SIGKILL: completed after", time.time() - killed_at)
    assert a.alive()
    assert child not in {e["pid"] for e in cluster.steps(run_id) if e["epoch"] == 2}
    # reject_on_worker_lost redelivers the message at once; while the dead child's lease is
    # live that delivery is a no-op, after it the sweep's or the redelivery's claim wins.
    assert_resumed_exactly(cluster, run_id, 8)


def test_an_orphaned_prefork_child_interrupts_its_run_cleanly(cluster: Cluster) -> None:
    """SIGKILL of the prefork main process alone: its child gets the parent-death signal,
    stops the run at the next step boundary and leaves it ``interrupted`` (not a crash: no
    attempt counts toward dead); another worker resumes it exactly."""
    a = cluster.start("prefork")
    run_id = cluster.submit("e2e.counter", steps=6, step_s=STEP_S)
    cluster.wait_steps_ended(run_id, 2)
    a.signal(signal.SIGKILL)
    wait_for(
        "the orphaned child to interrupt the run",
        lambda: (r := cluster.store.get(run_id)) is not None and r.status is RunStatus.INTERRUPTED,
        20,
    )
    cluster.start("threads")
    cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=40)
    record = cluster.store.get(run_id)
    assert record is not None and record.attempts == 2
    assert_resumed_exactly(cluster, run_id, 6)


def test_a_worker_killed_before_the_first_checkpoint_is_still_recovered(
    cluster: Cluster,
) -> None:
    a = cluster.start("prefork")
    run_id = cluster.submit("e2e.counter", steps=3, step_s=1.5)
    wait_for("the first step to start", lambda: cluster.steps(run_id, "start"), 10)
    # The whole host goes: the child running the step dies with its main process (a child
    # whose main process alone dies drains itself: test_an_orphaned_prefork_child_...).
    for pid in a.children():
        os.kill(pid, signal.SIGKILL)
    a.signal(signal.SIGKILL)
    assert cluster.store.load_checkpoint(run_id) is None
    cluster.start("threads")  # after the kill: starting it takes longer than a step here
    cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=40)
    assert step_numbers(cluster.ended(run_id, epoch=2)) == [1, 2, 3]
    assert cluster.transcript(run_id) == counter_transcript(3)


def test_a_registered_run_whose_message_was_lost_is_republished_after_the_queued_timeout(
    cluster: Cluster,
) -> None:
    """A crash between taking the message and claiming the run leaves it `queued` with its
    message stuck unacked for the visibility timeout; the sweep must not wait that long."""
    cluster.settings.update(EXECUTUS_QUEUED_TIMEOUT_S="2")
    request = cluster.register("e2e.counter", steps=2, step_s=0.1)  # never published
    assert request.run_id is not None
    registered_at = time.time()
    cluster.start("threads")
    cluster.wait_status(request.run_id, RunStatus.COMPLETED, timeout_s=30)
    first_start = min(e["t"] for e in cluster.steps(request.run_id))
    assert first_start - registered_at >= 2.0
    assert cluster.transcript(request.run_id) == counter_transcript(2)


def test_a_run_that_kills_its_worker_every_time_ends_dead_with_the_reason(
    cluster: Cluster,
) -> None:
    cluster.settings.update(
        EXECUTUS_MAX_RECOVERY_ATTEMPTS="2",
        EXECUTUS_LEASE_TTL_S="1",
        EXECUTUS_SWEEP_INTERVAL_S="0.3",
    )
    a = cluster.start("prefork", concurrency=1)
    run_id = cluster.submit("e2e.poison")
    record = cluster.wait_status(run_id, RunStatus.DEAD, timeout_s=40)
    # Two crashes are counted. A takeover decided less than two lease TTLs before the claim
    # gets the benefit of the doubt (its owner could still prove it survived), so depending on
    # timing the run is dead after MAX or MAX + 1 attempts -- never more.
    assert record.attempts in {2, 3}, record
    assert record.error is not None
    assert f"gave up after {record.attempts} attempts" in record.error
    assert "lease expired" in record.error
    assert len(cluster.steps(run_id, "poison")) == record.attempts  # never past the cap
    # The worker survived it all and still runs good work.
    assert a.alive()
    good = cluster.submit("e2e.counter", steps=2, step_s=0)
    cluster.wait_status(good, RunStatus.COMPLETED, timeout_s=20)


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_worker_restarted_on_the_same_host_resumes_its_crashed_runs_at_boot(
    cluster: Cluster, pool: str, timing
) -> None:
    """With a long lease (20 s), a SIGKILLed worker's runs would wait for expiry. The worker
    started next on this host proves the old owner dead (its pid is gone from this kernel's
    pid namespace) and resumes the run at boot -- long before the lease could have expired."""
    cluster.settings["EXECUTUS_LEASE_TTL_S"] = "20"
    cluster.settings["EXECUTUS_SWEEP_INTERVAL_S"] = "60"  # only the boot sweep can act here
    a = cluster.start(pool)
    run_id = cluster.submit("e2e.counter", steps=6, step_s=STEP_S)
    cluster.wait_steps_ended(run_id, 2)
    for pid in a.children():
        os.kill(pid, signal.SIGKILL)
    a.signal(signal.SIGKILL)
    killed_at = time.time()
    a.wait_exit(timeout_s=20)
    assert cluster.lease_exists(run_id)  # nobody released it: a crash
    b = cluster.start(pool)
    cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=40)
    resumed_at = min(e["t"] for e in cluster.steps(run_id) if e["epoch"] == 2)
    timing(f"{pool}: SIGKILL -> first resumed step, restarted on this host", resumed_at - killed_at)
    assert resumed_at - killed_at < 15  # the lease alone would hold it for 20 s
    assert {e["pid"] for e in cluster.steps(run_id) if e["epoch"] == 2} <= {b.pid, *b.children()}
    assert_resumed_exactly(cluster, run_id, 6)
    assert cluster.record(run_id).attempts == 2
