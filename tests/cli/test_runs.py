"""enqueue, status, runs, cancel, recover, schema: --json parses, errors are one line."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
import redis

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence
from executus_worker.cli import watch
from executus_worker.cli.runs import EXIT_TIMEOUT
from executus_worker.client import Client
from executus_worker.core.models import Checkpoint, Message, RunStatus
from executus_worker.embedded import free_port

from .clitools import assert_clean_error, ok_json, run

pytestmark = pytest.mark.redis


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
        ["enqueue", "demo.counter", "--model-tier", "large", "--metadata", "team=a",
         "--metadata", "k=v=w", "--max-iterations", "7", "--guild-id", "g1"],
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
        (["--input", "{not json"], 2, "--input is not valid JSON: Expecting property name"),
        (["--input", "[1, 2]"], 2, "--input must be a JSON object, got list"),
        (["--input", "@/nonexistent/input.json"], 2, "--input: cannot read /nonexistent"),
        (["--metadata", "novalue"], 2, "--metadata expects KEY=VALUE, got 'novalue'"),
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


def test_unreachable_redis_is_a_message_naming_the_setting() -> None:
    url = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"
    shown = url.replace("hunter2", "***")
    for args in (["status", "x"], ["enqueue", "demo.counter"], ["schedules", "ls"]):
        result = run(args, {"EXECUTUS_REDIS_URL": url})
        assert_clean_error(result, 1, f"Error: cannot reach Redis at EXECUTUS_REDIS_URL={shown}")
        assert "hunter2" not in result.output


def test_an_unreachable_broker_is_named_after_the_run_is_registered(
    env: dict[str, str],
) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/0"
    result = run(["enqueue", "demo.counter"], {**env, "EXECUTUS_BROKER_URL": broker})
    assert_clean_error(result, 1, "is registered but its message was not published")
    assert f"[broker: EXECUTUS_BROKER_URL={broker}]" in result.stderr


def test_invalid_settings_are_reported_without_their_values() -> None:
    result = run(["runs"], {"EXECUTUS_REDIS_URL": "http://user:s3cret@example.com"})
    assert_clean_error(result, 1, "EXECUTUS_REDIS_URL")
    assert "s3cret" not in result.output


def test_schema_prints_the_run_request_json_schema() -> None:
    result = run(["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["required"] == ["agent"]
    assert schema["additionalProperties"] is False
    assert schema["x-executus"]["task"] == "executus.run"


# -- recover -------------------------------------------------------------------------


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


# -- progress: status, enqueue --wait, runs --watch ------------------------------------------


class PlayedWorker:
    """Plays a worker through the store: claim, checkpoint steps, finish (no Celery)."""

    def __init__(self, redis_client: redis.Redis, run_id: str, owner: str = "host-1:4242") -> None:
        self.store, self.run_id, self.owner = RedisStore(redis_client), run_id, owner
        self.fence = Fence("", 0)
        self.messages: list[Message] = []

    def claim(self) -> None:
        claim = self.store.claim(
            self.run_id, owner=self.owner, lease_ttl_s=30, max_attempts=5, now=time.time()
        )
        assert claim.fence is not None
        self.fence = claim.fence

    def step(self, text: str, *, phase: str | None = None, done: list[str] | None = None) -> None:
        base = len(self.messages)
        new = [Message(role="assistant", content=text)]
        self.messages += new
        checkpoint = Checkpoint(
            run_id=self.run_id, epoch=self.fence.epoch, iteration=len(self.messages),
            messages=list(self.messages), active_phase=phase, completed_phases=done or [],
        )  # fmt: skip
        self.store.save_checkpoint(
            self.run_id, fence=self.fence, base_len=base, new_messages=new,
            checkpoint=checkpoint, now=time.time(),
        )  # fmt: skip

    def finish(self, status: RunStatus, *, output: str | None = None, error: str | None = None):  # type: ignore[no-untyped-def]
        self.store.finish(
            self.run_id, fence=self.fence, status=status, output=output, error=error,
            base_len=len(self.messages), new_messages=[], now=time.time(), result_ttl_s=600,
        )  # fmt: skip


def test_status_shows_step_phase_owner_epoch_attempts_and_lease(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    run_id = ok_json(["enqueue", "demo.phased"], env)["run_id"]
    worker = PlayedWorker(redis_client, run_id)
    worker.claim()
    worker.step("plan step 1", phase="plan")
    worker.step("work step 1", phase="work", done=["plan"])

    text = run(["status", run_id], env).stdout
    assert re.search(r"^step +2$", text, re.M), text
    assert re.search(r"^phase +work \(done: plan\)$", text, re.M)
    assert re.search(r"^owner +host-1:4242$", text, re.M)
    assert re.search(r"^epoch +1$", text, re.M)
    assert re.search(r"^attempts +1$", text, re.M)
    lease = re.search(r"^lease +(\d+\.\d)s left$", text, re.M)
    assert lease is not None and 0 < float(lease.group(1)) <= 30

    document = ok_json(["status", run_id], env)
    assert document["progress"]["step"] == 2
    assert document["progress"]["phase"] == "work"
    assert document["progress"]["completed_phases"] == ["plan"]
    assert 0 < document["progress"]["lease_left_s"] <= 30


def test_status_of_a_failed_run_shows_its_error_and_traceback_lines(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    run_id = ok_json(["enqueue", "demo.counter"], env)["run_id"]
    worker = PlayedWorker(redis_client, run_id)
    worker.claim()
    worker.step("step 1")
    error = 'ValueError: bad tool reply\nTraceback (most recent call last):\n  File "t.py"'
    worker.finish(RunStatus.FAILED, error=error)

    text = run(["status", run_id], env).stdout
    assert re.search(r"^status +failed$", text, re.M)
    assert re.search(r"^step +1$", text, re.M)  # from the transcript kept after the end
    assert re.search(r"^error +ValueError: bad tool reply$", text, re.M)
    assert re.search(r"^ +Traceback \(most recent call last\):$", text, re.M)  # indented


def test_enqueue_wait_says_when_nothing_claims_the_run(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch, "QUEUED_HINT_S", 0.1)
    result = run(["enqueue", "demo.counter", "--wait", "0.5"], env)
    assert result.exit_code == EXIT_TIMEOUT
    hint = "still queued after 0 s: is a worker running on queue 'executus'?"
    assert hint in result.stderr
    assert "(executus-worker worker)" in result.stderr
    assert "Error: run" in result.stderr
    assert "Traceback" not in result.output


def test_enqueue_wait_shows_the_run_progressing(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    run_id = "watched-1"
    worker = PlayedWorker(redis_client, run_id)

    def play() -> None:
        while not redis_client.exists(f"executus:{{run:{run_id}}}:rec"):
            time.sleep(0.02)
        time.sleep(0.5)
        worker.claim()
        for phase, done in (("plan", []), ("work", ["plan"])):
            time.sleep(0.5)
            worker.step(f"{phase} step 1", phase=phase, done=done)
        time.sleep(0.5)
        worker.finish(RunStatus.COMPLETED, output="ok")

    thread = threading.Thread(target=play)
    thread.start()
    try:
        result = run(["enqueue", "demo.phased", "--run-id", run_id, "--wait", "60"], env)
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "watched-1 claimed by host-1:4242 (epoch 1, attempt 1)" in lines
    assert "watched-1 phase plan" in lines
    assert "watched-1 phase work, done: plan" in lines
    assert "watched-1 completed: 'ok'" not in lines  # the final record is printed instead
    assert re.search(r"^status +completed$", result.stdout, re.M)


def test_runs_watch_until_done_prints_one_line_per_change_without_a_terminal(
    env: dict[str, str], redis_client: redis.Redis
) -> None:
    ok_json(["enqueue", "demo.counter", "--run-id", "w-done"], env)
    ok_json(["enqueue", "demo.counter", "--run-id", "w-live"], env)
    done, live = PlayedWorker(redis_client, "w-done"), PlayedWorker(redis_client, "w-live")
    for worker in (done, live):
        worker.claim()
        worker.step("step 1")
    done.finish(RunStatus.COMPLETED, output="done 1")
    timer = threading.Timer(1.0, lambda: live.finish(RunStatus.COMPLETED, output="done 1"))
    timer.start()
    try:
        result = run(["runs", "--watch", "--until-done", "--interval", "0.1"], env)
    finally:
        timer.join()
    assert result.exit_code == 0, result.output
    lines = [line.split(maxsplit=1)[1] for line in result.stdout.splitlines()]
    assert lines == [
        "w-live running (demo.counter)",
        "w-live claimed by host-1:4242 (epoch 1, attempt 1)",
        "w-done completed (demo.counter)",
        "w-live completed: 'done 1'",
    ]


def test_runs_watch_flags_are_checked(env: dict[str, str]) -> None:
    assert_clean_error(run(["runs", "--watch", "--json"], env), 2, "do not go together")
    assert_clean_error(run(["runs", "--until-done"], env), 2, "--until-done needs --watch")


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
