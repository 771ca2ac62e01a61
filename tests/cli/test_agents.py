"""``agents``, the live-agent check of ``enqueue`` and ``schedules add``, the agents file at
``worker`` start -- through click's CliRunner, on a real Redis."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from executus_worker import cli
from executus_worker.cli import processes
from executus_worker.fleet.directory import AgentDirectory, WorkerAd

pytestmark = pytest.mark.redis


@pytest.fixture
def env(redis_url: str, redis_client: redis.Redis) -> dict[str, str]:
    return {"EXECUTUS_REDIS_URL": redis_url}


@pytest.fixture
def directory(redis_client: redis.Redis) -> AgentDirectory:
    return AgentDirectory(redis_client, key_prefix="executus")


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(processes, "exec_celery", lambda argv: calls.append(list(argv)))
    yield calls


def run(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli.main, args, env=env)


def advertise(
    directory: AgentDirectory, worker: str, *agents: str, error: str | None = None
) -> None:
    directory.advertise(WorkerAd(
        worker=worker, agents=agents, queues=("executus",), pid=42, seen_at=time.time(),
        error=error,
    ))  # fmt: skip


def test_agents_lists_each_agent_with_the_workers_serving_it(
    env: dict[str, str], directory: AgentDirectory
) -> None:
    advertise(directory, "celery@a", "demo.counter", "shop.support")
    advertise(directory, "celery@b", "shop.support")
    advertise(directory, "celery@c", error="agents.toml: agent 'x': max_iterations: ...")
    result = run(["agents"], env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "AGENT         QUEUES    WORKERS",
        "demo.counter  executus  celery@a",
        "shop.support  executus  celery@a, celery@b",
    ]
    assert "worker celery@c serves no agents: agents.toml: agent 'x'" in result.stderr

    by_worker = run(["agents", "--workers"], env).stdout.splitlines()
    assert by_worker[0].split() == ["WORKER", "PID", "QUEUES", "LAST", "SEEN", "AGENTS"]
    assert re.match(r"celery@a  42   executus  \d+s ago +demo.counter, shop.support$", by_worker[1])

    document = json.loads(run(["agents", "--json"], env).stdout)
    assert document["agents"]["shop.support"] == {
        "workers": ["celery@a", "celery@b"], "queues": ["executus"],
    }  # fmt: skip
    assert [w["worker"] for w in document["workers"]] == ["celery@a", "celery@b", "celery@c"]


def test_agents_with_no_live_worker_says_so(env: dict[str, str]) -> None:
    result = run(["agents"], env)
    assert result.exit_code == 0
    assert "no live worker has advertised itself" in result.stderr


def test_enqueue_of_an_unserved_agent_is_a_clean_error_and_the_flag_overrides_it(
    env: dict[str, str], directory: AgentDirectory, redis_client: redis.Redis
) -> None:
    advertise(directory, "celery@a", "demo.counter")
    refused = run(["enqueue", "demo.countr"], env)
    assert refused.exit_code == 1
    assert "no live worker serves agent 'demo.countr'; the live workers serve: demo.counter" in (
        refused.stderr
    )
    assert "--allow-unknown-agent" in refused.stderr
    assert "Traceback" not in refused.output
    assert redis_client.llen("executus") == 0

    assert run(["enqueue", "demo.counter"], env).exit_code == 0
    forced = run(["enqueue", "demo.countr", "--allow-unknown-agent"], env)
    assert forced.exit_code == 0, forced.output
    assert redis_client.llen("executus") == 2


def test_schedules_add_checks_the_agent_too(env: dict[str, str], directory: AgentDirectory) -> None:
    args = ["schedules", "add", "nightly", "--cron", "0 3 * * *", "--agent", "demo.counter"]
    refused = run(args, env)
    assert refused.exit_code == 1
    assert "no live worker serves agent 'demo.counter'" in refused.stderr
    assert run([*args, "--allow-unknown-agent"], env).exit_code == 0
    advertise(directory, "celery@a", "demo.counter")
    added = run([*args[:2], "hourly", *args[3:]], env)
    assert added.exit_code == 0, added.output


def test_worker_refuses_to_start_on_a_bad_agents_file(
    env: dict[str, str], tmp_path: Path, exec_calls: list[list[str]]
) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text('[agents."shop.support"]\ntools = ["not a path"]\n')
    result = run(["worker"], {**env, "EXECUTUS_AGENTS_FILE": str(agents),
                              "EXECUTUS_MODEL_NAME": "m"})  # fmt: skip
    assert result.exit_code == 1
    assert f"{agents}: agent 'shop.support': tools.0: String should match pattern" in result.stderr
    assert exec_calls == []

    agents.write_text('[agents."shop.support"]\nsystem_prompt = "hi"\n')
    ok = run(["worker"], {**env, "EXECUTUS_AGENTS_FILE": str(agents), "EXECUTUS_MODEL_NAME": "m"})
    assert ok.exit_code == 0, ok.output
    assert len(exec_calls) == 1


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("EXECUTUS_PERSONA_FILE", "default = 3", "default must be a string"),
        ("EXECUTUS_SKILLS_FILE", "[skills.x]\ntools = ['nope.mod:f']", "cannot import nope.mod"),
    ],
)
def test_worker_refuses_to_start_on_a_bad_persona_or_skills_file(
    env: dict[str, str],
    tmp_path: Path,
    exec_calls: list[list[str]],
    variable: str,
    text: str,
    message: str,
) -> None:
    path = tmp_path / "battery.toml"
    path.write_text(text)
    result = run(["worker"], {**env, variable: str(path)})
    assert result.exit_code == 1
    assert str(path) in result.stderr and message in result.stderr
    assert exec_calls == []
