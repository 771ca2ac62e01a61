"""``check``: the doctor's findings, as text and as JSON."""

from __future__ import annotations

import pytest

from executus_worker.embedded import free_port

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
