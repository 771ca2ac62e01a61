"""The critic with a real prefork worker: a step stuck in a blocking call past the backstop."""

from __future__ import annotations

import time

import pytest

from executus_worker.client import Client
from executus_worker.core.models import RunStatus

from .harness import Cluster, counter_transcript, wait_for

pytestmark = pytest.mark.e2e


def test_a_step_stuck_past_the_backstop_is_killed_and_recorded_not_swept(
    cluster: Cluster, timing
) -> None:
    worker = cluster.start(
        "prefork",
        concurrency=1,  # the follow-up run must land on the very child that was interrupted
        EXECUTUS_CRITIC_TICK_S="0.1",
        EXECUTUS_CRITIC_BACKSTOP_MUL="3",
    )
    # Budget 1 s: extended once to 1.5 s (extend_once), killed there -- but the step is stuck
    # in time.sleep, so only the backstop (3 s) can end it, by interrupting the call.
    run_id = cluster.submit("e2e.stuck", metadata={"executus.runtime_s": "1"})
    wait_for("the stuck step to start", lambda: cluster.steps(run_id, "start"), 30)
    started = time.monotonic()
    record = cluster.wait_status(run_id, RunStatus.FAILED, timeout_s=30)
    timing("stuck step ended after", time.monotonic() - started)
    assert record.error is not None
    summary, _, traceback = record.error.partition("\n")
    assert summary.startswith("critic_kill: runtime "), record.error
    # Where the step was stuck, kept with the record.
    assert "SoftTimeLimitExceeded" in traceback and "time.sleep" in traceback
    assert record.attempts == 1
    with Client.from_url(cluster.redis_url, key_prefix=cluster.prefix) as client:
        story = [
            (e.event, e.data.get("decision"), e.data.get("tier"))
            for e in client.events(run_id, follow=True, timeout_s=10)
        ]
    assert story == [
        ("claimed", None, None),
        ("started", None, None),
        ("critic", "extend", None),
        ("critic", "kill", "soft"),
        ("critic", "kill", "backstop"),
        ("failed", None, None),
    ]
    assert cluster.store.load_checkpoint(run_id) is None
    assert cluster.keys_without_ttl(run_id) == []

    # The same child goes on serving runs, and the failed run stays failed: no sweep of the
    # lease (2 s) or recovery brings it back.
    follow_up = cluster.submit("e2e.counter", steps=2, step_s=0.05)
    cluster.wait_status(follow_up, RunStatus.COMPLETED, timeout_s=30)
    assert cluster.transcript(follow_up) == counter_transcript(2)
    assert {e["pid"] for e in cluster.steps(follow_up)} == {e["pid"] for e in cluster.steps(run_id)}
    time.sleep(3)  # past a lease TTL and several sweep intervals
    after = cluster.record(run_id)
    assert (after.status, after.attempts) == (RunStatus.FAILED, 1)
    assert worker.alive()
    assert "killed by the critic (backstop)" in worker.text()
