"""``executus-worker schedules``: add | rm | ls | validate | pause | resume, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from executus_worker.cli import main
from executus_worker.cli.schedules import schedules

pytestmark = pytest.mark.redis

FILE = """
[jobs.nightly-digest]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
overlap = "skip"
run = { agent = "demo.counter", input = { steps = 3, step_s = 0.1 }, guild_id = "g1" }
"""


@pytest.fixture
def env(redis_client: redis.Redis, redis_url: str, tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "schedule.toml"
    path.write_text(FILE)
    return {
        "EXECUTUS_REDIS_URL": redis_url,
        "EXECUTUS_KEY_PREFIX": "cli",
        "EXECUTUS_SCHEDULE_FILE": str(path),
        # No worker runs here: the live-agent check of `add` is tested in test_agents.py.
        "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false",
    }


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(schedules, list(args), env=env, catch_exceptions=False)


def test_add_ls_pause_resume_rm(env: dict[str, str]) -> None:
    added = run(
        env, "add", "hourly-report", "--cron", "@hourly", "--timezone", "America/New_York",
        "--agent", "demo.counter", "--input", '{"steps": 2}', "--metadata", "team=ops",
        "--overlap", "allow", "--jitter-s", "30",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "added hourly-report: next fire" in added.output

    listed = run(env, "ls")
    assert listed.exit_code == 0, listed.output
    assert "hourly-report" in listed.output and "nightly-digest" in listed.output
    assert "not yet reserved" in listed.output

    document = json.loads(run(env, "ls", "--json").output)
    jobs = {j["name"]: j for j in document["jobs"]}
    assert jobs["hourly-report"]["source"] == "redis"
    assert jobs["hourly-report"]["timezone"] == "America/New_York"
    assert jobs["nightly-digest"]["source"] == "file"
    assert document["file_error"] is None

    assert "paused hourly-report" in run(env, "pause", "hourly-report").output
    paused = json.loads(run(env, "ls", "--json").output)["jobs"]
    assert {j["name"]: j["state"] for j in paused}["hourly-report"] == "paused"
    assert "resumed hourly-report" in run(env, "resume", "hourly-report").output
    assert "removed hourly-report" in run(env, "rm", "hourly-report").output
    remaining = json.loads(run(env, "ls", "--json").output)["jobs"]
    assert [j["name"] for j in remaining] == ["nightly-digest"]


def test_add_reports_bad_fields_by_name(env: dict[str, str]) -> None:
    result = run(env, "add", "x", "--cron", "0 25 * * *", "--agent", "demo.counter")
    assert result.exit_code == 1
    assert "x.cron: bad cron expression" in result.output
    result = run(env, "add", "x", "--cron", "0 3 * * *", "--agent", "a", "--timezone", "Moon/Base")
    assert result.exit_code == 1 and "x.timezone: unknown timezone" in result.output
    result = run(env, "add", "x", "--cron", "0 3 * * *", "--agent", "a", "--input", "[1")
    assert result.exit_code == 2 and "--input" in result.output


def test_file_jobs_cannot_be_added_over_or_removed(env: dict[str, str]) -> None:
    result = run(env, "add", "nightly-digest", "--cron", "0 3 * * *", "--agent", "a")
    assert result.exit_code == 1 and "edit the file" in result.output
    result = run(env, "rm", "nightly-digest")
    assert result.exit_code == 1 and "edit the file" in result.output
    result = run(env, "rm", "unknown")
    assert result.exit_code == 1 and "no job named 'unknown'" in result.output


def test_validate_a_good_file(env: dict[str, str]) -> None:
    result = run(env, "validate")
    assert result.exit_code == 0, result.output
    assert "ok     nightly-digest: 0 3 * * * (Europe/Berlin)" in result.output
    assert "1 job(s) valid" in result.output


def test_validate_names_the_broken_job_and_field(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(FILE + '\n[jobs.broken]\ncron = "0 3 * * *"\ntimezone = "X/Y"\nrun = {}\n')
    result = run(env, "validate", str(bad))
    assert result.exit_code == 1
    assert "error  broken: jobs.broken.timezone: unknown timezone 'X/Y'" in result.output
    assert "jobs.broken.run.agent: Field required" in result.output
    assert "ok     nightly-digest" in result.output


def test_validate_a_file_that_is_not_toml(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[jobs.x\n")
    result = run(env, "validate", str(bad))
    assert result.exit_code == 1 and "invalid TOML" in result.output


def test_validate_one_expression(env: dict[str, str]) -> None:
    result = run(env, "validate", "--cron", "30 2 * * *", "--timezone", "Europe/Berlin")
    assert result.exit_code == 0, result.output
    fires = [line for line in result.output.splitlines() if line.startswith("         ")]
    assert len(fires) == 3 and all("Z  (" in line for line in fires)
    result = run(env, "validate", "--cron", "30 2 * *")
    assert result.exit_code == 1 and "expected 5 fields" in result.output


def test_the_group_is_mounted_in_the_console_script(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["schedules", "ls", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert [j["name"] for j in json.loads(result.output)["jobs"]] == ["nightly-digest"]


def test_redis_unreachable_is_a_one_line_error(env: dict[str, str]) -> None:
    result = run(env | {"EXECUTUS_REDIS_URL": "redis://127.0.0.1:9/0"}, "ls")
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: cannot reach Redis at EXECUTUS_REDIS_URL=redis://127.0.0.1:9/0: "
    )
