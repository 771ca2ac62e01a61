"""Hostile messages and bad records next to healthy runs in flight, with real workers.

Every healthy run must finish exactly (one attempt, exact transcript: no worker died, no run was
restarted), every bad message that names a run must leave that run with a record saying what was
wrong, a bad duplicate must never touch a valid run, and an unreadable checkpoint is never
deleted. The unit-level rules are in tests/worker/test_bad_messages.py.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from e2e.harness import Cluster, counter_transcript, wait_for

from executus_worker.cli.output import record_text
from executus_worker.core.models import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    Message,
    RunRequest,
    RunStatus,
)
from executus_worker.publish import TASK_RUN, build_envelope

from .workers import assert_completed_exactly, check_workers

pytestmark = pytest.mark.faults

STEPS = 8
STEP_S = 0.25


def envelope(cluster: Cluster, args: list[Any], **properties: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(build_envelope(TASK_RUN, args, queue=cluster.queue))
    message["properties"].update(properties)
    return message


def with_body(cluster: Cluster, body: bytes) -> dict[str, Any]:
    message = envelope(cluster, ["placeholder"])
    message["body"] = base64.b64encode(body).decode()
    return message


def push(cluster: Cluster, *messages: dict[str, Any] | str) -> None:
    for message in messages:
        raw = message if isinstance(message, str) else json.dumps(message)
        cluster.client.lpush(cluster.queue, raw)


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def counter_json(run_id: str | None = None, **extra: Any) -> str:
    request = {"agent": "e2e.counter", "input": {"steps": STEPS, "step_s": STEP_S}}
    return json.dumps({**request, **({"run_id": run_id} if run_id else {}), **extra})


def with_checkpoint(cluster: Cluster, run_id: str, steps: int) -> None:
    """A run interrupted after ``steps`` checkpointed steps (what a SIGTERM leaves)."""
    cluster.register("e2e.counter", run_id, steps=STEPS, step_s=STEP_S)
    claim = cluster.store.claim(run_id, owner="gone:1", lease_ttl_s=30, max_attempts=5, now=0)
    assert claim.fence is not None
    messages = [Message(role="assistant", content=f"step {i}") for i in range(1, steps + 1)]
    checkpoint = Checkpoint(run_id=run_id, iteration=steps, messages=messages)
    cluster.store.save_checkpoint(
        run_id, fence=claim.fence, base_len=0, new_messages=messages, checkpoint=checkpoint,
        now=time.time(),
    )  # fmt: skip
    cluster.store.interrupt(run_id, fence=claim.fence, now=time.time())


def stored_bytes(cluster: Cluster, run_id: str) -> tuple[Any, Any]:
    keys = cluster.store.keys
    return cluster.client.hgetall(keys.ckpt(run_id)), cluster.client.get(keys.msgs(run_id))


def test_hostile_messages_and_bad_records_never_touch_the_healthy_runs(
    fault_cluster: Cluster,
) -> None:
    cluster = fault_cluster
    # -- staged before any worker runs, so these are the first deliveries ----------------------
    # Item 7: an interrupted run with progress, and a duplicate carrying one extra field.
    with_checkpoint(cluster, "resumable", 3)
    push(cluster, envelope(cluster, ["resumable", counter_json("resumable", surprise=True)]))
    # Item 6: a stored request a newer client wrote (a field this version does not know).
    newer = cluster.register("e2e.counter", "newer-request", steps=2)
    stored = {**json.loads(newer.to_json()), "budget_usd": 3}
    cluster.client.hset(cluster.store.keys.rec("newer-request"), "request", json.dumps(stored))
    cluster.publish(newer)
    # Item 5: a checkpoint of a newer format, and a corrupt one.
    for run_id in ("newer-checkpoint", "corrupt-checkpoint"):
        with_checkpoint(cluster, run_id, 2)
    ckpt = cluster.store.keys.ckpt
    cluster.client.hset(ckpt("newer-checkpoint"), "format_version", CHECKPOINT_FORMAT_VERSION + 1)
    cluster.client.hset(ckpt("corrupt-checkpoint"), "msg_count", 5)
    kept = {r: stored_bytes(cluster, r) for r in ("newer-checkpoint", "corrupt-checkpoint")}
    for run_id in ("newer-checkpoint", "corrupt-checkpoint"):
        cluster.publish(RunRequest(run_id=run_id, agent="e2e.counter"))

    a = cluster.start("prefork", concurrency=3)
    b = cluster.start("threads", concurrency=3)
    healthy = [cluster.submit("e2e.counter", steps=STEPS, step_s=STEP_S) for _ in range(4)]
    for run_id in healthy:
        cluster.wait_steps_ended(run_id, 1)

    # -- while the healthy runs are in flight ---------------------------------------------------
    busy = healthy[0]
    push(
        cluster,
        # Bad duplicates of a running run: extra field, oversized, nested deeper than the cap
        # (as a string, and as a dict the transport must stop before Celery decodes it).
        envelope(cluster, [busy, counter_json(busy, surprise=1)]),
        envelope(cluster, [busy, "x" * 300_000]),
        envelope(cluster, [busy, '{"agent": "e2e.counter", "input": ' + nested(50_000) + "}"]),
        with_body(cluster, f'[["{busy}", {{"input": {nested(50_000)}}}], {{}}, {{}}]'.encode()),
        # Item 10: runs first seen in deeply nested requests.
        envelope(cluster, ["deep-text", '{"agent": "e2e.counter", "input": ' + nested(9000) + "}"]),
        with_body(cluster, f'[["deep-dict", {{"input": {nested(9000)}}}], {{}}, {{}}]'.encode()),
        # Item 11: a numeric run id, no delivery_tag, a 2-element body.
        envelope(cluster, [424242, counter_json()]),
        {**envelope(cluster, ["no-tag", counter_json("no-tag")]),
         "properties": {"body_encoding": "base64"}},
        with_body(cluster, json.dumps([["two-element", counter_json("two-element")], {}]).encode()),
        # An envelope nested deeper than json.loads recurses: nothing names a run; dropped.
        '{"body": "", "headers": {"x": ' + nested(100_000) + '}, "properties": {}}',
    )  # fmt: skip

    assert_completed_exactly(cluster, dict.fromkeys(healthy, STEPS), [a, b], timeout_s=60)
    for run_id in healthy:
        record = cluster.record(run_id)
        assert (record.attempts, record.epoch) == (1, 1)  # never restarted, never failed
        assert cluster.ended(run_id) == counter_transcript(STEPS)  # no step ran twice

    assert_completed_exactly(cluster, {"resumable": STEPS}, [a, b], timeout_s=30)
    assert cluster.ended("resumable")[0] == "step 4"  # resumed, not restarted

    expected_failures = {
        "newer-request": "budget_usd",
        "corrupt-checkpoint": "counts 5",
        "deep-text": "nests deeper than 100 levels",
        "deep-dict": "message body nests deeper than 103 levels",
        "424242": "must be a string",
        "no-tag": "malformed message: no delivery_tag",
        "two-element": "malformed message: task body is not [args, kwargs, embed]",
    }
    for run_id, reason in expected_failures.items():
        record = cluster.wait_status(run_id, RunStatus.FAILED, timeout_s=30)
        assert record.error is not None and reason in record.error, (run_id, record.error)
        assert cluster.steps(run_id) == []  # nothing ran

    # The unreadable checkpoints are kept byte for byte; the newer one waits, not failed.
    assert stored_bytes(cluster, "corrupt-checkpoint") == kept["corrupt-checkpoint"]
    parked = cluster.record("newer-checkpoint")
    assert parked.status in {RunStatus.INTERRUPTED, RunStatus.QUEUED}
    assert parked.needs_format == CHECKPOINT_FORMAT_VERSION + 1
    assert parked.last_reason is not None and "upgrade the worker" in parked.last_reason
    assert "waiting   for a worker that reads checkpoint format" in record_text(parked)
    time.sleep(3)  # six sweeps: the parked run is not claimed over and over
    after = cluster.record("newer-checkpoint")
    assert after.attempts == 2 and after.epoch == 2  # the staged claim, then the one that parked
    assert stored_bytes(cluster, "newer-checkpoint") == kept["newer-checkpoint"]
    logs = a.text() + b.text()
    assert logs.count("its checkpoint needs a newer worker") <= 2
    assert "dropped a broker item that is not JSON (maximum recursion depth" in logs
    wait_for("the queue to drain", lambda: cluster.client.llen(cluster.queue) == 0, 10)
    check_workers([a, b])
    fresh = {cluster.submit("e2e.counter", steps=2, step_s=0.05): 2 for _ in range(4)}
    assert_completed_exactly(cluster, fresh, [a, b], timeout_s=30)  # both still consuming
