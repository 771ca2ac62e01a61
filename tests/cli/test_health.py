"""`executus-worker health`: the liveness probe reads the heartbeat file and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from executus_worker.cli import main
from executus_worker.observability.health import HealthBeacon


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("EXECUTUS_HEALTH_STALE_S", "EXECUTUS_HEALTH_INTERVAL_S"):
        monkeypatch.delenv(name, raising=False)
    # An unreachable Redis: the probe must not care (it never connects).
    monkeypatch.setenv("EXECUTUS_REDIS_URL", "redis://127.0.0.1:9/0")
    path = tmp_path / "w.health"
    monkeypatch.setenv("EXECUTUS_HEALTH_FILE", str(path))
    return path


def test_a_fresh_heartbeat_exits_zero(env: Path) -> None:
    beacon = HealthBeacon(env, interval_s=5)
    beacon.set_state("ready")
    beacon.write()
    result = CliRunner().invoke(main, ["health", "--ready"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("healthy: ready")


def test_a_missing_heartbeat_exits_one_with_the_path(env: Path) -> None:
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 1
    assert f"no heartbeat file at {env}" in result.output


def test_a_starting_worker_is_alive_but_not_ready(env: Path) -> None:
    HealthBeacon(env, interval_s=5).write()
    assert CliRunner().invoke(main, ["health"]).exit_code == 0
    result = CliRunner().invoke(main, ["health", "--ready", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["detail"] == "worker is starting, not ready"


def test_a_stale_limit_below_the_write_interval_is_refused(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTUS_HEALTH_STALE_S", "1")
    result = CliRunner().invoke(main, ["health"])
    assert result.exit_code == 1
    assert "EXECUTUS_HEALTH_STALE_S: " in result.output
    assert "must exceed EXECUTUS_HEALTH_INTERVAL_S" in result.output
