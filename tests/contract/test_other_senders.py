"""Other services enqueue runs with clients nobody here wrote, following only the published schema.

Each sender reads ``executus-worker schema`` (its ``x-executus`` block: task, queue, argument
layout) and nothing else of ours: a Python service with only Celery installed, a message pushed
onto the broker by hand (Celery task protocol 2), and a Node.js service using ``celery-node``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import Cluster, counter_transcript

from executus_worker.core.models import RunStatus

from .conftest import plain_env

pytestmark = [pytest.mark.e2e, pytest.mark.contract]

HERE = Path(__file__).resolve().parent
EXECUTUS_WORKER = str(Path(sys.executable).with_name("executus-worker"))


def published_schema(cluster: Cluster, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """The schema exactly as a producer team gets it: ``executus-worker schema``."""
    done = subprocess.run(
        [EXECUTUS_WORKER, "schema"], env=cluster.env(), capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    path = tmp_path / "run-request.schema.json"
    path.write_text(done.stdout)
    contract: dict[str, Any] = json.loads(done.stdout)["x-executus"]
    assert contract["queue"] == cluster.queue  # this deployment's queue, not Celery's default
    return path, contract


def counter_request(steps: int) -> tuple[str, str]:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    return run_id, json.dumps({"agent": "e2e.counter", "input": {"steps": steps, "step_s": 0.05}})


def assert_completed_exactly(cluster: Cluster, run_id: str, steps: int) -> None:
    record = cluster.wait_status(run_id, RunStatus.COMPLETED, timeout_s=60)
    assert record.output == f"done {steps}"
    assert cluster.transcript(run_id) == counter_transcript(steps)
    assert cluster.ended(run_id) == counter_transcript(steps)


def run_sender(argv: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    # cwd: not our checkout, whose package a Python sender would otherwise import from ''.
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=240, check=False, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    reply: dict[str, Any] = json.loads(lines[-1])
    return reply


def test_a_celery_only_python_service_enqueues_a_run_that_completes(
    cluster: Cluster, celery_only_python: Path, tmp_path: Path
) -> None:
    isolated = subprocess.run(
        [str(celery_only_python), "-c", "import executus_worker"], env=plain_env(),
        capture_output=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert isolated.returncode != 0, "the sender's virtualenv must not see our package"
    cluster.start("threads", EXECUTUS_RESULT_BACKEND=cluster.redis_url)
    schema, _ = published_schema(cluster, tmp_path)
    sender = [str(celery_only_python), str(HERE / "senders" / "celery_sender.py"), str(schema)]

    run_id, request = counter_request(3)
    reply = run_sender([*sender, cluster.redis_url, run_id, request], plain_env(), tmp_path)
    assert reply == {"state": "SUCCESS", "result": "done 3"}
    assert_completed_exactly(cluster, run_id, 3)

    # A run that cannot run tells the sender why, in Celery's terms.
    bad_id = f"run-{uuid.uuid4().hex[:8]}"
    bad = json.dumps({"agent": "no.such.agent"})
    reply = run_sender([*sender, cluster.redis_url, bad_id, bad], plain_env(), tmp_path)
    assert (reply["state"], reply["error"]) == ("FAILURE", "RunFailed")
    assert "no.such.agent" in reply["message"]
    assert cluster.record(bad_id).status is RunStatus.FAILED


def _protocol2(task: str, task_id: str, queue: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """A Celery protocol-2 message in kombu's Redis envelope, built by hand."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = json.dumps([args, kwargs, embed]).encode()
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "go", "task": task, "id": task_id, "root_id": task_id,
                        "parent_id": None, "group": None, "retries": 0, "eta": None,
                        "expires": None, "timelimit": [None, None]},
            "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                           "delivery_info": {"exchange": "", "routing_key": queue},
                           "priority": 0, "body_encoding": "base64",
                           "delivery_tag": str(uuid.uuid4())},
        }
    )  # fmt: skip


def test_a_hand_built_protocol_2_message_enqueues_a_run_that_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start("threads")
    _, contract = published_schema(cluster, tmp_path)
    assert contract["args"] == ["run_id", "request"]
    positional_id, request = counter_request(3)
    keyword_id, keyword_request = counter_request(2)
    task, queue = contract["task"], contract["queue"]
    messages = [
        _protocol2(task, positional_id, queue, [positional_id, request], {}),
        # The same two names as keyword arguments.
        _protocol2(task, keyword_id, queue, [], {"run_id": keyword_id, "request": keyword_request}),
    ]
    cluster.client.lpush(contract["queue"], *messages)
    assert_completed_exactly(cluster, positional_id, 3)
    assert_completed_exactly(cluster, keyword_id, 2)


def test_a_node_celery_node_service_enqueues_a_run_that_completes(
    cluster: Cluster, celery_node: Path, tmp_path: Path
) -> None:
    cluster.start("threads", EXECUTUS_RESULT_BACKEND=cluster.redis_url)
    schema, _ = published_schema(cluster, tmp_path)
    run_id, request = counter_request(3)
    env = {**plain_env(), "NODE_PATH": str(celery_node)}
    script = str(HERE / "senders" / "node_sender.js")
    argv = ["node", script, str(schema), cluster.redis_url, run_id, request]
    reply = run_sender(argv, env, tmp_path)
    assert reply == {"state": "SUCCESS", "result": "done 3"}, reply
    assert_completed_exactly(cluster, run_id, 3)
    assert os.path.isdir(celery_node / "celery-node")
