"""JobSpec: defaults, validation of every field, and the request each fire enqueues."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from executus_worker.core.models import RunRequest
from executus_worker.schedules.model import JobSpec, OverlapPolicy
from executus_worker.schedules.source_toml import load_jobs_file


def spec(**fields: Any) -> JobSpec:
    base: dict[str, Any] = {"name": "j", "cron": "0 3 * * *", "run": {"agent": "demo.counter"}}
    return JobSpec.model_validate(base | fields)


def test_defaults() -> None:
    job = spec()
    assert job.timezone == "UTC"
    assert job.overlap is OverlapPolicy.SKIP
    assert job.enabled is True
    assert (job.catchup_window_s, job.jitter_s) == (3600.0, 0.0)


def test_fire_request_carries_the_template_the_run_id_and_provenance() -> None:
    job = spec(
        name="nightly-digest",
        run={
            "agent": "demo.counter",
            "input": {"steps": 3},
            "guild_id": "g1",
            "model_tier": "small",
            "metadata": {"team": "x"},
            "limits": {"max_iterations": 7},
        },
    )
    run_id, request = job.fire_request(datetime(2026, 11, 21, 2, tzinfo=UTC))
    assert run_id == "sched:nightly-digest:2026-11-21T02:00:00Z"
    assert request.run_id == run_id
    assert (request.agent, request.input, request.guild_id, request.model_tier) == (
        "demo.counter",
        {"steps": 3},
        "g1",
        "small",
    )
    assert request.limits.max_iterations == 7
    assert request.metadata == {
        "team": "x",
        "schedule": "nightly-digest",
        "fire_at": "2026-11-21T02:00:00Z",
    }
    # The request survives the wire validation the client applies.
    assert RunRequest.parse(request.to_json(), max_bytes=10_000) == request


def test_longest_name_still_makes_a_valid_run_id() -> None:
    job = spec(name="n" * 120)
    run_id, _ = job.fire_request(datetime(2026, 1, 1, tzinfo=UTC))
    RunRequest(agent="a", run_id=run_id)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"name": "a:b"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "n" * 121}, "name"),
        ({"cron": "bad"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"timezone": "Nowhere/City"}, "timezone"),
        ({"overlap": "queue"}, "overlap"),
        ({"jitter_s": 3601}, "jitter_s"),
        ({"catchup_window_s": -1}, "catchup_window_s"),
        ({"run": {"agent": "a", "run_id": "fixed"}}, "run"),
        ({"run": {}}, "run.agent"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_fields_are_rejected_with_their_location(fields: dict[str, Any], loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    assert loc in {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def test_schedule_key_changes_with_cron_or_timezone_only() -> None:
    assert spec().schedule_key == spec(jitter_s=5, overlap="allow").schedule_key
    assert spec().schedule_key != spec(cron="0 4 * * *").schedule_key
    assert spec().schedule_key != spec(timezone="Europe/Berlin").schedule_key


def test_json_round_trip() -> None:
    job = spec(timezone="Europe/Berlin", jitter_s=10, overlap="allow")
    assert JobSpec.model_validate_json(job.model_dump_json()) == job


def test_a_run_template_nested_too_deeply_is_refused_by_name() -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    run = {"agent": "demo.counter", "input": {"x": nested}}
    with pytest.raises(ValidationError, match="run request nests deeper than 100 levels"):
        JobSpec.model_validate({"name": "deep", "cron": "* * * * *", "run": run})


def test_a_schedule_file_nested_too_deeply_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    result = load_jobs_file(path)
    assert result.error is not None and "nested too deeply" in result.error
