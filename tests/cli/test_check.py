"""``check``: the doctor's findings, as text and as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from executus_worker.embedded import free_port
from executus_worker.publish import TASK_RUN, build_envelope

from .clitools import ok_json, run

pytestmark = pytest.mark.redis


def test_check_passes_on_the_private_redis_and_warns_about_persistence(
    env: dict[str, str],
) -> None:
    findings = ok_json(["check"], env)
    by_check = {f["check"]: f for f in findings}
    assert by_check["redis"]["level"] == "ok"
    assert by_check["redis.lua"]["level"] == "ok"
    assert by_check["redis.maxmemory-policy"]["level"] == "ok"
    assert by_check["redis.persistence"]["level"] == "warn"  # the test server saves nothing
    strict = run(["check", "--strict"], env)
    assert strict.exit_code == 1


def test_check_fails_on_unreachable_redis_and_on_a_celery_broker_override(
    env: dict[str, str],
) -> None:
    down = run(["check"], {"EXECUTUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.exit_code == 1
    assert "[fail] redis: cannot reach" in down.stdout

    override = {**env, "CELERY_BROKER_URL": "redis://user:s3cret@elsewhere:6379/0"}
    result = run(["check"], override)
    assert result.exit_code == 1
    assert "CELERY_BROKER_URL is set" in result.stdout
    assert "s3cret" not in result.stdout


def test_check_reports_agents_workers_queue_depth_and_stranded_messages(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    run_id = ok_json(["enqueue", "demo.counter"], env)["run_id"]
    # A producer that forgot queue="executus": the message sits on Celery's default queue.
    redis_client.lpush("celery", build_envelope(TASK_RUN, ["lost-1", "{}"], queue="celery"))
    redis_client.lpush("celery", json.dumps({"headers": {"task": "other.task"}}))

    by_check: dict[str, list[dict[str, str]]] = {}
    for finding in ok_json(["check"], env):
        by_check.setdefault(finding["check"], []).append(finding)

    [agents] = by_check["agents"]
    assert agents["level"] == "ok"
    assert "demo.counter, demo.phased" in agents["detail"]
    [workers] = by_check["workers"]
    assert workers["level"] == "warn"
    assert "no live worker on this Redis and key prefix" in workers["detail"]
    assert "(executus-worker worker)" in workers["detail"]
    [queue] = by_check["queues"]
    assert queue["level"] == "warn"
    assert "1 message(s) waiting on 'executus' and no live worker consumes it" in queue["detail"]
    [stranded] = by_check["stranded"]
    assert stranded["level"] == "warn"
    assert (
        "executus.run messages on queues no executus worker reads: 1 on 'celery'"
        in (stranded["detail"])
    )
    assert run_id


def test_check_fails_on_an_agents_file_that_does_not_load(
    env: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "agents.toml"
    broken.write_text('[agents]\n"my.agent" = "no_such_module_here:make"\n')
    result = run(["check"], {**env, "EXECUTUS_AGENTS_FILE": str(broken)})
    assert result.exit_code == 1
    line = next(line for line in result.stdout.splitlines() if "agents:" in line)
    assert line.startswith(f"[fail] agents: EXECUTUS_AGENTS_FILE={broken}:")
    assert "no_such_module_here" in line


@pytest.mark.e2e
def test_check_names_the_live_workers_and_their_queues(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker_env = {**os.environ, **env}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "executus_worker.worker", "worker",
             "-P", "solo", "-n", "checked@%h", "-l", "INFO"],
            env=worker_env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while b" ready." not in log.read_bytes() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        findings = ok_json(["check"], env)
    finally:
        proc.terminate()
        proc.wait(60)
    workers = [f for f in findings if f["check"] == "workers"]
    assert [f["level"] for f in workers] == ["ok"]
    assert re.match(r"checked@\S+ is alive, consuming executus$", workers[0]["detail"])
    [queue] = [f for f in findings if f["check"] == "queues"]
    assert re.search(r"0 message\(s\) waiting on 'executus', consumed by checked@", queue["detail"])


def test_check_reaches_a_rabbitmq_broker_and_fails_on_an_unreachable_one(
    env: dict[str, str], rabbitmq_url: str
) -> None:
    ok = run(["check"], {**env, "EXECUTUS_BROKER_URL": rabbitmq_url})
    assert "[ok  ] broker: RabbitMQ" in ok.stdout
    assert "cannot read the broker's queues" not in ok.stdout
    down = run(["check"], {**env, "EXECUTUS_BROKER_URL": f"amqp://u:p@127.0.0.1:{free_port()}/"})
    assert down.exit_code == 1
    assert "[fail] broker: cannot reach amqp://u:***@127.0.0.1:" in down.stdout
