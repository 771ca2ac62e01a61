"""The schedule file: the documented example, errors named by job and field, live reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from executus_worker.schedules.model import JobSource, OverlapPolicy
from executus_worker.schedules.source_toml import TomlJobFile, load_jobs_file

EXAMPLE = """
[jobs.nightly-digest]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
overlap = "skip"
run = { agent = "demo.counter", input = { steps = 3, step_s = 0.1 }, guild_id = "g1" }
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    # Editors and tests can write twice within the mtime granularity; make the change visible.
    stamp = time.time() + len(text) % 7 + 1
    os.utime(path, (stamp, stamp))
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    result = load_jobs_file(write(tmp_path / "s.toml", EXAMPLE))
    assert result.error is None and result.problems == ()
    (job,) = result.jobs
    assert job.name == "nightly-digest"
    assert (job.cron, job.timezone, job.overlap) == (
        "0 3 * * *",
        "Europe/Berlin",
        OverlapPolicy.SKIP,
    )
    assert job.run.agent == "demo.counter"
    assert job.run.input == {"steps": 3, "step_s": 0.1}
    assert job.run.guild_id == "g1"
    assert (job.enabled, job.jitter_s, job.catchup_window_s) == (True, 0.0, 3600.0)


def test_the_shipped_ops_example_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "ops" / "schedule.example.toml"
    if not path.exists():
        pytest.skip("ops/schedule.example.toml not present")
    result = load_jobs_file(path)
    assert result.error is None and result.problems == () and result.jobs


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('cron = "61 * * * *"', "jobs.bad.cron: bad cron expression '61 * * * *'"),
        ('cron = "0 3 * * *"\ntimezone = "Mars/Olympus"', "jobs.bad.timezone: unknown timezone"),
        ('cron = "0 3 * * *"\noverlap = "sometimes"', "jobs.bad.overlap: Input should be"),
        ('cron = "0 3 * * *"\njitter_s = -1', "jobs.bad.jitter_s: Input should be greater"),
        ('cron = "0 3 * * *"\ncatchup_window_s = 1e9', "jobs.bad.catchup_window_s"),
        ('cron = "0 3 * * *"\ncrn = "x"', "jobs.bad.crn: Extra inputs are not permitted"),
        ("", "jobs.bad.cron: Field required"),
        ('cron = "0 3 * * *"\nrun = { agent = "bad name" }', "jobs.bad.run.agent:"),
        ('cron = "0 3 * * *"\nrun = { agent = "a", colour = 1 }', "jobs.bad.run.colour:"),
        ('cron = "0 3 * * *"\nrun = { agent = "a", run_id = "x" }', "jobs.bad.run: run.run_id"),
        ('cron = "0 3 * * *"\nname = "other"', "jobs.bad.name: the job name is the table name"),
    ],
)
def test_a_bad_job_is_reported_by_name_and_field_and_the_rest_load(
    tmp_path: Path, table: str, expected: str
) -> None:
    run = "" if "run =" in table or table == "" else '\nrun = { agent = "demo.counter" }'
    text = EXAMPLE + f"\n[jobs.bad]\n{table}{run}\n"
    result = load_jobs_file(write(tmp_path / "s.toml", text))
    assert [j.name for j in result.jobs] == ["nightly-digest"]
    (problem,) = result.problems
    assert (problem.name, problem.source) == ("bad", JobSource.FILE)
    assert expected in problem.error


def test_a_job_name_that_cannot_be_a_run_id_part_is_refused(tmp_path: Path) -> None:
    text = '[jobs."has space"]\ncron = "0 3 * * *"\nrun = { agent = "a" }\n'
    (problem,) = load_jobs_file(write(tmp_path / "s.toml", text)).problems
    assert problem.error.startswith("jobs.has space.name: String should match pattern")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[jobs.x\ncron = 1", "invalid TOML"),
        ('[job.x]\ncron = "0 3 * * *"', "unknown top-level keys ['job']"),
        ('jobs = "x"', "'jobs' must be a table"),
    ],
)
def test_a_broken_file_is_one_error(tmp_path: Path, text: str, expected: str) -> None:
    result = load_jobs_file(write(tmp_path / "s.toml", text))
    assert result.jobs == ()
    assert result.error is not None and expected in result.error


def test_a_missing_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = load_jobs_file(tmp_path / "nope.toml")
    assert result.error is not None and "cannot read" in result.error


def test_the_file_is_reread_only_when_it_changes(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", EXAMPLE)
    source = TomlJobFile(path)
    first = source.load()
    assert source.load() is first  # unchanged: no re-parse
    write(path, EXAMPLE.replace("0 3 * * *", "0 4 * * *"))
    assert source.load().jobs[0].cron == "0 4 * * *"


def test_a_broken_or_vanished_file_keeps_the_last_good_jobs(tmp_path: Path) -> None:
    path = write(tmp_path / "s.toml", EXAMPLE)
    source = TomlJobFile(path)
    assert source.load().error is None
    write(path, "[jobs.x\n")
    broken = source.load()
    assert [j.name for j in broken.jobs] == ["nightly-digest"]
    assert broken.error is not None and "invalid TOML" in broken.error
    path.unlink()
    gone = source.load()
    assert [j.name for j in gone.jobs] == ["nightly-digest"]
    assert gone.error is not None and "cannot read" in gone.error
    write(path, EXAMPLE.replace("nightly-digest", "renamed"))
    back = source.load()
    assert back.error is None and [j.name for j in back.jobs] == ["renamed"]
