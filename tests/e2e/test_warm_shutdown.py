"""Warm shutdown with real workers: stop at a step boundary, keep the checkpoint, exit in time."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from executus_worker.core.models import RunStatus
from executus_worker.settings import Settings
from executus_worker.worker import create_app

from .harness import CELERY, Cluster, Worker, counter_transcript, step_numbers, wait_for

pytestmark = pytest.mark.e2e

STEP_S = 0.4
# Exit budget: the rest of the current step, plus Celery's own teardown (~2 s for prefork,
# measured in shared/research/celery-shutdown.md), plus slack for this noisy 2-core box.
EXIT_BUDGET_S = STEP_S + 2.0 + 2.0


@pytest.mark.parametrize(
    ("pool", "cluster"),
    [
        ("prefork", "redis"),
        ("threads", "redis"),
        ("solo", "redis"),
        ("prefork", "rabbitmq"),
        ("prefork", "redis-cluster"),  # run state on a 3-master Redis Cluster
    ],
    ids=["prefork", "threads", "solo", "prefork-rabbitmq", "prefork-redis-cluster"],
    indirect=["cluster"],
)
def test_sigterm_mid_run_interrupts_at_a_step_boundary_and_a_new_worker_finishes_it(
    cluster: Cluster, pool: str, timing
) -> None:
    a = cluster.start(pool)
    run_id = cluster.submit("e2e.counter", steps=8, step_s=STEP_S)
    cluster.wait_steps_ended(run_id, 2)
    a.signal(signal.SIGTERM)
    exit_s = a.wait_exit(timeout_s=20)
    timing(f"{pool} exit after SIGTERM", exit_s)
    assert a.proc.returncode == 0
    assert exit_s < EXIT_BUDGET_S

    record = cluster.record(run_id)
    assert record.status is RunStatus.INTERRUPTED
    assert not cluster.lease_exists(run_id)
    done_before = cluster.ended(run_id, epoch=1)
    checkpoint = cluster.store.load_checkpoint(run_id)
    assert checkpoint is not None
    # The checkpoint holds exactly the last finished step: nothing lost, nothing half-done.
    assert [m.content for m in checkpoint.messages] == done_before
    assert checkpoint.iteration == len(done_before) < 8

    cluster.start(pool)
    final = cluster.wait_status(run_id, RunStatus.COMPLETED)
    assert final.output == "done 8"
    assert cluster.transcript(run_id) == counter_transcript(8)
    # A warm stop re-runs nothing: every step ran exactly once, in order, across two owners.
    assert cluster.ended(run_id) == counter_transcript(8)
    assert step_numbers(cluster.ended(run_id, epoch=2))[0] == len(done_before) + 1
    assert cluster.store.load_checkpoint(run_id) is None
    assert cluster.keys_without_ttl(run_id) == []


def test_a_step_longer_than_the_grace_is_cut_short_on_prefork(cluster: Cluster, timing) -> None:
    """SIGUSR1 escalation: billiard raises SoftTimeLimitExceeded inside the long step."""
    grace_s = 1.0
    a = cluster.start("prefork", EXECUTUS_SHUTDOWN_GRACE_S=str(grace_s))
    run_id = cluster.submit("e2e.counter", steps=3, step_s=20)
    wait_for("the long step to start", lambda: cluster.steps(run_id, "start"), 10)
    a.signal(signal.SIGTERM)
    exit_s = a.wait_exit(timeout_s=15)
    timing("prefork exit with a 20 s step, grace 1 s", exit_s)
    assert exit_s < grace_s + 2.0 + 2.0
    record = cluster.record(run_id)
    assert record.status is RunStatus.INTERRUPTED
    assert "interrupting the step" in a.text()


def test_a_booting_worker_never_takes_a_run_whose_owner_is_still_draining(
    cluster: Cluster, timing
) -> None:
    """A finishes a 2.5 s step after SIGTERM (lease 1.5 s, renewed) while B boots and sweeps
    every 0.3 s: B may start the run only after A interrupted it."""
    cluster.settings.update(EXECUTUS_LEASE_TTL_S="1.5", EXECUTUS_SWEEP_INTERVAL_S="0.3")
    a = cluster.start("prefork")
    run_id = cluster.submit("e2e.counter", steps=4, step_s=2.5)
    cluster.wait_steps_ended(run_id, 1)
    wait_for("step 2 to start", lambda: len(cluster.steps(run_id, "start")) >= 2, 10)
    a.signal(signal.SIGTERM)
    cluster.start("threads")
    exit_s = a.wait_exit(timeout_s=20)
    timing("prefork exit while draining a 2.5 s step", exit_s)
    cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=30)

    first = [e for e in cluster.steps(run_id) if e["epoch"] == 1]
    second = [e for e in cluster.steps(run_id) if e["epoch"] == 2]
    assert cluster.ended(run_id, epoch=1) == ["step 1", "step 2"]  # A drained its step
    assert max(e["t"] for e in first) <= min(e["t"] for e in second)  # never overlapping
    assert {e["pid"] for e in first}.isdisjoint({e["pid"] for e in second})
    assert cluster.record(run_id).epoch == 2
    assert cluster.transcript(run_id) == counter_transcript(4)


def _remote_shutdown(cluster: Cluster, worker: Worker, via: str) -> None:
    if via == "cli":
        # The worker exits without replying, so the CLI says "No nodes replied" (exit 69):
        # Celery's own behaviour for `shutdown`. What counts is what the worker does.
        subprocess.run(
            [CELERY, "-A", "executus_worker.worker", "control", "shutdown", "-d",
             worker.hostname()],
            env=cluster.env(),
            capture_output=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        return
    # What Flower's shutdown button does: a `shutdown` broadcast to one worker.
    app = create_app(Settings(redis_url=cluster.redis_url, key_prefix=cluster.prefix))
    try:
        app.control.shutdown(destination=[worker.hostname()])
    finally:
        app.close()


@pytest.mark.parametrize(("pool", "via"), [("prefork", "cli"), ("threads", "app")])
def test_celery_control_shutdown_drains_like_sigterm(
    cluster: Cluster, pool: str, via: str, timing
) -> None:
    """`celery control shutdown` (and Flower's button) stops every run at its next step
    boundary and marks it interrupted, and the worker exits in time; a new worker finishes the
    run exactly."""
    a = cluster.start(pool)
    run_id = cluster.submit("e2e.counter", steps=40, step_s=STEP_S)
    cluster.wait_steps_ended(run_id, 2)
    _remote_shutdown(cluster, a, via)
    wait_for("the remote shutdown to arrive", lambda: "Got shutdown from remote" in a.text(), 60)
    a.signalled_at = time.monotonic()
    exit_s = a.wait_exit(timeout_s=20)
    timing(f"{pool} exit after a remote shutdown ({via})", exit_s)
    assert a.proc.returncode == 0
    assert exit_s < EXIT_BUDGET_S

    assert cluster.record(run_id).status is RunStatus.INTERRUPTED
    assert not cluster.lease_exists(run_id)
    done_before = cluster.ended(run_id, epoch=1)
    assert len(done_before) < 40
    checkpoint = cluster.store.load_checkpoint(run_id)
    assert checkpoint is not None
    assert [m.content for m in checkpoint.messages] == done_before

    cluster.start(pool)
    final = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=90)
    assert final.output == "done 40"
    assert cluster.ended(run_id) == counter_transcript(40)
    assert cluster.transcript(run_id) == counter_transcript(40)
