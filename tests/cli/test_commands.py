"""The console script through click's CliRunner: --json parses, errors are one line + non-zero."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from executus_worker import cli
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.cli import processes
from executus_worker.cli.runs import EXIT_TIMEOUT
from executus_worker.client import Client
from executus_worker.core.models import RunStatus
from executus_worker.embedded import free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def env(redis_url: str, redis_client: redis.Redis) -> dict[str, str]:
    # No worker runs in these tests: enqueue's live-agent check is tested in test_agents.py.
    return {"EXECUTUS_REDIS_URL": redis_url, "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false"}


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Capture the argv `worker`/`beat` would exec into, instead of replacing pytest."""
    calls: list[list[str]] = []
    monkeypatch.setattr(processes, "exec_celery", lambda argv: calls.append(list(argv)))
    yield calls


def run(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli.main, args, env=env, input=stdin)


def ok_json(args: list[str], env: dict[str, str]) -> Any:
    result = run([*args, "--json"], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_clean_error(result: Result, code: int, text: str) -> None:
    """A failure is a message on stderr and an exit code, never a traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert text in result.stderr
    assert "Traceback" not in result.output


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_json_reports_the_run_and_a_repeat_sends_nothing(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    args = ["enqueue", "demo.counter", "--input", '{"steps": 2}', "--run-id", "cli-1"]
    first = ok_json(args, env)
    again = ok_json(args, env)

    assert first == {"run_id": "cli-1", "created": True, "queue": "executus", "status": "queued"}
    assert again["created"] is False
    assert redis_client.llen("executus") == 1


def test_enqueue_prints_only_the_run_id_on_stdout(env: dict[str, str]) -> None:
    result = run(["enqueue", "demo.counter", "--run-id", "plain-1"], env)
    assert result.exit_code == 0
    assert result.stdout == "plain-1\n"
    assert "enqueued on executus" in result.stderr
    again = run(["enqueue", "demo.counter", "--run-id", "plain-1"], env)
    assert again.stdout == "plain-1\n"
    assert "already exists (queued); nothing sent" in again.stderr


def test_enqueue_of_an_existing_run_id_with_another_payload_is_a_one_line_error(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    first = run(["enqueue", "demo.counter", "--input", '{"steps": 2}', "--run-id", "c-1"], env)
    assert first.exit_code == 0, first.output
    result = run(["enqueue", "demo.counter", "--input", '{"steps": 3}', "--run-id", "c-1"], env)
    assert_clean_error(result, 1, "run 'c-1' already exists with a different request")
    assert "differs in: input.steps" in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert redis_client.llen("executus") == 1


def test_enqueue_reads_input_from_a_file_and_stdin(env: dict[str, str], tmp_path: Path) -> None:
    payload = tmp_path / "input.json"
    payload.write_text('{"steps": 4}')
    from_file = ok_json(["enqueue", "demo.counter", "--input", f"@{payload}"], env)
    result = run(["enqueue", "demo.counter", "--input", "@-", "--json"], env, stdin='{"steps": 5}')
    from_stdin = json.loads(result.stdout)

    record = ok_json(["status", from_file["run_id"]], env)
    assert record["request"]["input"] == {"steps": 4}
    assert ok_json(["status", from_stdin["run_id"]], env)["request"]["input"] == {"steps": 5}


def test_enqueue_passes_tier_metadata_and_limits(env: dict[str, str]) -> None:
    tiers = {**env, "EXECUTUS_TIER_QUEUES": '{"large": "executus.large"}'}
    out = ok_json(
        ["enqueue", "demo.counter", "--model-tier", "large", "--meta", "team=a",
         "--meta", "k=v=w", "--max-iterations", "7", "--guild-id", "g1"],
        tiers,
    )  # fmt: skip
    request = ok_json(["status", out["run_id"]], tiers)["request"]
    assert out["queue"] == "executus.large"
    assert request["metadata"] == {"team": "a", "k": "v=w"}
    assert request["limits"] == {"max_iterations": 7}
    assert request["guild_id"] == "g1"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--input", "{not json"], 2, "not valid JSON"),
        (["--input", "[1, 2]"], 2, "must be a JSON object"),
        (["--input", "@/nonexistent/input.json"], 2, "cannot read"),
        (["--meta", "novalue"], 2, "KEY=VALUE"),
        (["--run-id", "bad/id"], 1, "invalid run request"),
        (["--max-iterations", "0"], 2, "--max-iterations"),
    ],
)
def test_enqueue_bad_input_is_a_message_not_a_traceback(
    env: dict[str, str], redis_client: redis.Redis, args: list[str], code: int, text: str
) -> None:
    assert_clean_error(run(["enqueue", "demo.counter", *args], env), code, text)
    assert redis_client.dbsize() == 0


def test_enqueue_of_an_invalid_agent_name_is_rejected(env: dict[str, str]) -> None:
    assert_clean_error(run(["enqueue", "no spaces allowed"], env), 1, "agent")


def test_enqueue_wait_times_out_with_exit_124(env: dict[str, str]) -> None:
    result = run(["enqueue", "demo.counter", "--wait", "0.2", "--json"], env)
    assert result.exit_code == EXIT_TIMEOUT
    document = json.loads(result.stdout)
    assert document["timed_out"] is True
    assert document["status"] == "queued"


# -- status, runs, cancel ------------------------------------------------------------------


def test_status_runs_and_cancel_json(env: dict[str, str]) -> None:
    run_id = ok_json(["enqueue", "demo.counter"], env)["run_id"]

    status = ok_json(["status", run_id, "--transcript"], env)
    assert (status["run_id"], status["status"], status["transcript"]) == (run_id, "queued", [])
    assert [r["run_id"] for r in ok_json(["runs"], env)] == [run_id]

    assert ok_json(["cancel", run_id], env)["status"] == "cancelled"
    assert [r["run_id"] for r in ok_json(["runs", "--status", "cancelled"], env)] == [run_id]
    assert ok_json(["runs", "--status", "queued"], env) == []


def test_human_status_and_runs(env: dict[str, str]) -> None:
    run_id = ok_json(["enqueue", "demo.counter"], env)["run_id"]
    status = run(["status", run_id, "-t"], env)
    assert "status    queued" in status.stdout
    assert "(empty transcript)" in status.stdout
    table = run(["runs"], env).stdout.splitlines()
    assert table[0].split() == ["RUN", "STATUS", "AGENT", "QUEUE", "ATTEMPTS", "UPDATED"]
    assert table[1].startswith(run_id)
    assert run(["runs", "--status", "dead"], env).stdout.strip() == "(no runs)"


def test_unknown_run_is_exit_1_with_a_message(env: dict[str, str]) -> None:
    assert_clean_error(run(["status", "nope"], env), 1, "not found")
    assert_clean_error(run(["cancel", "nope", "--json"], env), 1, "not found")


def test_an_unknown_status_filter_is_a_usage_error(env: dict[str, str]) -> None:
    assert_clean_error(run(["runs", "--status", "bogus"], env), 2, "bogus")


def test_unreachable_redis_is_a_message_not_a_traceback() -> None:
    env = {"EXECUTUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    assert_clean_error(run(["status", "x"], env), 1, "Error")
    assert_clean_error(run(["enqueue", "demo.counter"], env), 1, "Error")


def test_invalid_settings_are_reported_without_their_values() -> None:
    result = run(["runs"], {"EXECUTUS_REDIS_URL": "http://user:s3cret@example.com"})
    assert_clean_error(result, 1, "EXECUTUS_REDIS_URL")
    assert "s3cret" not in result.output


# -- schema, check -------------------------------------------------------------------------


def test_schema_prints_the_run_request_json_schema() -> None:
    result = run(["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["required"] == ["agent"]
    assert schema["additionalProperties"] is False
    assert schema["x-executus"]["task"] == "executus.run"


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


# -- worker, beat --------------------------------------------------------------------------


def test_worker_execs_celery_on_every_queue_by_default(exec_calls: list[list[str]]) -> None:
    env = {"EXECUTUS_TIER_QUEUES": '{"large": "q.large", "small": "q.small"}'}
    result = run(["worker", "--pool", "threads", "-c", "3", "-n", "w1@%h"], env)
    assert result.exit_code == 0, result.output
    [argv] = exec_calls
    assert argv[:6] == [sys.executable, "-m", "celery", "-A", "executus_worker.worker", "worker"]
    assert argv[argv.index("--queues") + 1] == "executus,q.large,q.small"
    assert argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert argv[argv.index("--hostname") + 1] == "w1@%h"


def test_worker_passes_explicit_queues_and_extra_celery_args(
    exec_calls: list[list[str]],
) -> None:
    result = run(["worker", "-Q", "a, b", "--", "--max-tasks-per-child", "10"], {})
    assert result.exit_code == 0, result.output
    [argv] = exec_calls
    assert argv[argv.index("--queues") + 1] == "a,b"
    assert argv[-2:] == ["--max-tasks-per-child", "10"]


def test_worker_rejects_an_unknown_pool(exec_calls: list[list[str]]) -> None:
    assert_clean_error(run(["worker", "--pool", "gevent"], {}), 2, "gevent")
    assert exec_calls == []


def test_beat_execs_celery_beat_with_the_executus_scheduler(
    exec_calls: list[list[str]],
) -> None:
    assert run(["beat"], {}).exit_code == 0
    [argv] = exec_calls
    assert argv[5] == "beat"
    assert argv[argv.index("--scheduler") + 1] == "beat.scheduler:ExecutusScheduler"


# -- recover, demo -------------------------------------------------------------------------


def test_recover_republishes_an_interrupted_run(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    run_id = ok_json(["enqueue", "demo.counter"], env)["run_id"]
    store = RedisStore(redis_client)
    claim = store.claim(run_id, owner="gone", lease_ttl_s=30, max_attempts=5, now=time.time())
    store.interrupt(run_id, fence=claim.fence, now=time.time())

    report = ok_json(["recover"], env)

    assert (report["requeued"], report["published"], report["publish_failed"]) == (1, 1, 0)
    assert ok_json(["status", run_id], env)["status"] == "queued"
    assert redis_client.llen("executus") == 2  # the enqueue's message and the sweep's
    human = run(["recover"], env)
    assert human.exit_code == 0
    assert "requeued 0" in human.stdout


def test_demo_runs_against_the_given_redis(redis_url: str) -> None:
    result = run(["demo", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert "All transcripts exact" in result.stdout


def test_schedules_group_is_wired_in(env: dict[str, str]) -> None:
    added = run(["schedules", "add", "hourly", "--cron", "@hourly", "--agent", "demo.counter"], env)
    assert added.exit_code == 0, added.output
    listed = json.loads(run(["schedules", "ls", "--json"], env).stdout)
    assert [job["name"] for job in listed["jobs"]] == ["hourly"]


# -- dev (real processes) ------------------------------------------------------------------


@pytest.mark.e2e
def test_dev_serves_runs_and_stops_every_child_on_sigterm(
    redis_url: str, redis_client: redis.Redis
) -> None:
    env = {**os.environ, "EXECUTUS_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "executus_worker.cli", "dev", "-c", "2", "-l", "WARNING"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        assert "Ctrl-C stops everything" in banner[2], banner
        pids = [int(p) for p in re.findall(r"pid (\d+)", banner[0])]
        assert len(pids) == 2  # worker and beat
        with Client.from_url(redis_url) as client:
            deadline = time.monotonic() + 60
            while not client.agents().serving("demo.counter") and time.monotonic() < deadline:
                time.sleep(0.1)  # the worker advertises its agents once it is ready
            run_id = client.enqueue(agent="demo.counter", input={"steps": 2, "step_s": 0})
            assert client.wait(run_id, timeout_s=60).status.value == "completed"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "dev: stopped" in proc.stdout.read()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc (Linux)")
def test_worker_execs_so_sigterm_reaches_celery_main_process_directly(
    redis_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "EXECUTUS_REDIS_URL": redis_url}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "executus_worker.cli", "worker", "-P", "solo", "-l", "INFO"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Same pid, new program: the process we started *is* Celery's main process.
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 60
        while b"celery" not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"executus_worker.worker\0worker" in cmdline.read_bytes()
        # A SIGTERM before Celery installs its handlers kills it with the default action:
        # wait until it says it is ready (a fixed sleep was too short on a loaded box).
        while b" ready." not in log.read_bytes() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_status_shows_a_failed_runs_traceback_aligned(env: dict[str, str]) -> None:
    run_id = ok_json(["enqueue", "demo.counter"], env)["run_id"]
    with Client.from_url(env["EXECUTUS_REDIS_URL"]) as client:
        claim = client.store.claim(run_id, owner="t", lease_ttl_s=30, max_attempts=5, now=1.0)
        client.store.finish(
            run_id, fence=claim.fence, status=RunStatus.FAILED, output=None,
            error="ValueError: boom\nTraceback (most recent call last):\n  File \"x.py\"",
            base_len=0, new_messages=[], now=2.0, result_ttl_s=60,
        )  # fmt: skip
    lines = run(["status", run_id], env).stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error"))
    assert lines[at].endswith("ValueError: boom")
    column = lines[at].index("ValueError")
    assert lines[at + 1][column:] == "Traceback (most recent call last):"
    assert lines[at + 2][column:] == '  File "x.py"'
