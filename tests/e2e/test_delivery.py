"""Deliveries with real workers: duplicates, redelivery, malformed messages, cancel, phases."""

from __future__ import annotations

import base64
import json
import time

import pytest

from executus_worker.core.models import RunStatus
from executus_worker.publish import TASK_RUN, build_envelope

from .harness import Cluster, counter_transcript, wait_for

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("cluster", ["redis", "rabbitmq"], indirect=True)
def test_a_run_delivered_three_times_and_redelivered_executes_once(cluster: Cluster) -> None:
    a = cluster.start("prefork")
    b = cluster.start("threads")
    request = cluster.register("e2e.counter", steps=6, step_s=0.3)
    run_id = request.run_id
    assert run_id is not None
    cluster.publish(request, times=3)
    cluster.wait_steps_ended(run_id, 2)
    if cluster.on_rabbitmq:
        # RabbitMQ redelivers only a dead channel's messages (the SIGKILL test); a copy
        # arriving while the first delivery is unacked and running is the same to the run.
        cluster.publish(request)
    else:
        # What the broker does when the visibility timeout passes: the running run's message
        # is delivered again while the first delivery is still unacked and running.
        assert cluster.redeliver_unacked() == 1
    record = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=30)
    # A late redelivery of the finished run changes nothing either.
    cluster.publish(request)
    time.sleep(1.0)

    assert record.attempts == 1 and record.epoch == 1
    assert cluster.ended(run_id) == counter_transcript(6)  # one execution, no step twice
    starts = cluster.steps(run_id, "start")
    assert len({e["pid"] for e in starts}) == 1
    assert cluster.transcript(run_id) == counter_transcript(6)
    assert cluster.record(run_id).status is RunStatus.COMPLETED
    duplicates = a.text().count("duplicate delivery ignored") + b.text().count(
        "duplicate delivery ignored"
    )
    assert duplicates == 4  # two extra publishes, one redelivery, one late duplicate


def _raw_task(task: str, body: object, queue: str) -> str:
    envelope = json.loads(build_envelope(task, ["x"], queue=queue))
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    envelope["body"] = base64.b64encode(raw).decode()
    return json.dumps(envelope)


def test_malformed_and_wrong_schema_messages_do_not_stop_the_good_runs(cluster: Cluster) -> None:
    worker = cluster.start("prefork")
    good_before = cluster.submit("e2e.counter", steps=2, step_s=0.1)
    q = cluster.queue
    garbage = [
        "this is not json",
        json.dumps({"unexpected": "shape"}),
        json.dumps({"body": "!!!", "headers": {"task": TASK_RUN, "id": "1"}, "properties": {}}),
        _raw_task("no.such.task", [["a"], {}, {}], q),
        _raw_task(TASK_RUN, "not a protocol-2 body", q),
        _raw_task(TASK_RUN, b"{not json", q),
        _raw_task(TASK_RUN, [[], {}, {}], q),  # no run id at all
        _raw_task(TASK_RUN, [[1, 2], {}, {}], q),  # a run id that is not one
    ]
    cluster.client.lpush(q, *garbage)
    # A bad request that names a run: that run fails with the validation message.
    bad_request = json.dumps({"agent": "e2e.counter", "surprise": True})
    cluster.client.lpush(q, build_envelope(TASK_RUN, ["bad-run", bad_request], queue=q))
    unknown_agent = cluster.submit("no.such.agent")
    good_after = cluster.submit("e2e.counter", steps=2, step_s=0.1)

    for run_id in (good_before, good_after):
        cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=30)
        assert cluster.transcript(run_id) == counter_transcript(2)
    failed = cluster.wait_status("bad-run", RunStatus.FAILED, timeout_s=10)
    assert failed.error is not None and "surprise" in failed.error
    unknown = cluster.wait_status(unknown_agent, RunStatus.FAILED, timeout_s=10)
    assert unknown.error is not None and "unknown agent 'no.such.agent'" in unknown.error
    wait_for("the queue to drain", lambda: cluster.client.llen(q) == 0, 10)
    assert worker.alive()
    assert worker.children()  # the pool is intact


def test_a_cancelled_queued_run_never_starts_and_a_running_one_stops_at_a_boundary(
    cluster: Cluster,
) -> None:
    queued = cluster.submit("e2e.counter", steps=3, step_s=0.1)
    cluster.store.request_cancel(queued, now=time.time())
    cluster.start("threads")
    running = cluster.submit("e2e.counter", steps=20, step_s=0.3)
    cluster.wait_steps_ended(running, 2)
    cluster.store.request_cancel(running, now=time.time())
    record = cluster.wait_status(running, RunStatus.CANCELLED, timeout_s=10)
    done = cluster.ended(running)
    assert 2 <= len(done) < 20
    assert cluster.transcript(running) == done  # the final transcript is kept
    assert cluster.store.load_checkpoint(running) is None
    assert cluster.keys_without_ttl(running) == []
    assert record.status is RunStatus.CANCELLED
    time.sleep(0.5)
    assert cluster.record(queued).status is RunStatus.CANCELLED
    assert cluster.steps(queued) == []


def test_a_phased_run_interrupted_in_phase_two_reruns_only_that_phase(cluster: Cluster) -> None:
    a = cluster.start("threads")
    run_id = cluster.submit("e2e.phased", phases=["plan", "work", "report"], steps=3, step_s=0.3)
    wait_for("work step 1", lambda: "work step 1" in cluster.ended(run_id), 20)
    a.signal(__import__("signal").SIGTERM)
    a.wait_exit(timeout_s=20)
    checkpoint = cluster.store.load_checkpoint(run_id)
    assert checkpoint is not None
    assert checkpoint.completed_phases == ["plan"] and checkpoint.active_phase == "work"

    cluster.start("threads")
    record = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=30)
    expected = [f"{p} step {j}" for p in ("plan", "work", "report") for j in (1, 2, 3)]
    assert cluster.transcript(run_id) == expected
    # Phase 1 ran once in all; phase 2 restarted from its start on the new owner.
    ended = cluster.ended(run_id)
    assert sum(m.startswith("plan") for m in ended) == 3
    assert cluster.ended(run_id, epoch=2)[0] == "work step 1"
    assert not any(m.startswith("plan") for m in cluster.ended(run_id, epoch=2))
    assert record.output is not None
