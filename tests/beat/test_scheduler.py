"""ExecutusScheduler inside Celery's beat machinery: jobs from the file and Redis, the sweep,
no local schedule file, and a real `celery beat` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from celery import Celery

from beat.scheduler import ExecutusScheduler
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRequest
from executus_worker.schedules.model import JobSpec
from executus_worker.schedules.store import ScheduleStore
from executus_worker.settings import Settings

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
JOB = """
[jobs.nightly-digest]
cron = "0 3 * * *"
timezone = "Europe/Berlin"
overlap = "skip"
run = { agent = "demo.counter", input = { steps = 3, step_s = 0.1 }, guild_id = "g1" }
"""


@pytest.fixture
def schedule_file(tmp_path: Path) -> Path:
    path = tmp_path / "schedule.toml"
    path.write_text(JOB)
    return path


@pytest.fixture
def scheduler(
    redis_client: redis.Redis, redis_url: str, schedule_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ExecutusScheduler, list[int]]]:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a shelve would appear here
    sweeps: list[int] = []
    settings = Settings(redis_url=redis_url, key_prefix="bt", schedule_file=schedule_file)
    app = Celery("beat-test", set_as_current=False, broker=redis_url)
    sched = ExecutusScheduler(app, settings=settings, sweep=lambda: sweeps.append(1))
    yield sched, sweeps
    sched.close()


def test_tick_reserves_file_jobs_and_runs_the_sweep(
    scheduler: tuple[ExecutusScheduler, list[int]], redis_client: redis.Redis, tmp_path: Path
) -> None:
    sched, sweeps = scheduler
    wait_s = sched.tick()
    assert 0 <= wait_s <= 5
    state = ScheduleStore(redis_client, key_prefix="bt").state("nightly-digest")
    assert state.next_fire.endswith(("01:00:00Z", "02:00:00Z"))  # 03:00 Berlin in UTC
    assert sweeps == [1]
    sched.tick()
    assert sweeps == [1]  # not again before sweep_interval_s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule.toml"]  # no shelve


def test_a_due_job_is_registered_and_published_to_the_broker(
    scheduler: tuple[ExecutusScheduler, list[int]], redis_client: redis.Redis
) -> None:
    sched, _ = scheduler
    sched.tick()
    store = ScheduleStore(redis_client, key_prefix="bt")
    nominal = datetime.strptime(store.state("nightly-digest").next_fire, "%Y-%m-%dT%H:%M:%SZ")
    fire_ts = nominal.replace(tzinfo=UTC).timestamp()
    assert sched._parts is not None
    sched._parts.ticker._clock = lambda: fire_ts + 1  # jump to the fire
    sched.tick()
    run_id = f"sched:nightly-digest:{nominal:%Y-%m-%dT%H:%M:%SZ}"
    assert redis_client.exists(f"bt:{{run:{run_id}}}:rec")
    assert redis_client.llen("executus") == 1  # the executus.run message on the default queue


def test_editing_the_file_applies_without_restart(
    scheduler: tuple[ExecutusScheduler, list[int]], redis_client: redis.Redis, schedule_file: Path
) -> None:
    sched, _ = scheduler
    sched.tick()
    schedule_file.write_text(JOB.replace('cron = "0 3 * * *"', 'cron = "*/10 * * * *"'))
    os.utime(schedule_file, (time.time() + 5, time.time() + 5))  # a new mtime even if fast
    sched.tick()
    state = ScheduleStore(redis_client, key_prefix="bt").state("nightly-digest")
    assert state.schedule_key == "*/10 * * * *|Europe/Berlin"


def test_celery_beat_schedule_entries_are_not_run(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    app = Celery("beat-test", set_as_current=False, broker=redis_url)
    app.conf.beat_schedule = {"x": {"task": "x", "schedule": 1.0}}
    settings = Settings(redis_url=redis_url, key_prefix="bt")
    sched = ExecutusScheduler(app, settings=settings, sweep=lambda: None)
    try:
        sched.tick()
        assert sched.schedule == {}
        assert "ignoring 1 beat_schedule entries" in caplog.text
    finally:
        sched.close()


def test_lazy_scheduler_builds_nothing(redis_url: str) -> None:
    app = Celery("beat-test", set_as_current=False, broker=redis_url)
    sched = ExecutusScheduler(app, lazy=True, settings=Settings(redis_url=redis_url))
    assert sched._parts is None
    assert "executus jobs" in sched.info
    sched.close()


@pytest.mark.e2e
def test_celery_beat_process_runs_jobs_and_the_sweep_without_a_local_file(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, schedule_file: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
    env |= {
        "EXECUTUS_REDIS_URL": redis_url,
        "EXECUTUS_KEY_PREFIX": "be2e",
        "EXECUTUS_SCHEDULE_FILE": str(schedule_file),
        "EXECUTUS_SWEEP_INTERVAL_S": "1",
        "PYTHONPATH": str(ROOT),
    }
    ScheduleStore(redis_client, key_prefix="be2e").add_job(
        _spec("dynamic", "*/5 * * * *"), replace=True
    )
    # A run registered long ago whose message never went out: only a sweep re-publishes it.
    RedisStore(redis_client, key_prefix="be2e").register(
        RunRequest(agent="demo.counter"), run_id="orphan", queue="executus",
        now=time.time() - 5000,
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "executus_worker.worker", "beat",
         "-S", "beat.scheduler:ExecutusScheduler", "--loglevel", "INFO"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        store = ScheduleStore(redis_client, key_prefix="be2e")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reserved = store.state("nightly-digest").next_fire and store.state("dynamic").next_fire
            if reserved and redis_client.llen("executus"):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert store.state("nightly-digest").next_fire, output
    assert store.state("dynamic").next_fire, output
    assert redis_client.llen("executus") == 1, output  # the sweep ran inside beat
    assert "Traceback" not in output, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schedule.toml"], output


def _spec(name: str, cron: str) -> JobSpec:
    return JobSpec.model_validate({"name": name, "cron": cron, "run": {"agent": "demo.counter"}})


def test_an_evicting_redis_is_warned_about(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        app = Celery("beat-test", set_as_current=False, broker=redis_url)
        sched = ExecutusScheduler(app, settings=Settings(redis_url=redis_url), sweep=lambda: None)
        sched.close()
    finally:
        redis_client.config_set("maxmemory-policy", before)
    assert "maxmemory-policy is 'allkeys-lru'" in caplog.text


@pytest.mark.e2e
def test_three_celery_beat_processes_fire_each_due_job_exactly_once(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """Real processes racing for 20 due fires: 20 runs, 20 messages, none twice."""
    prefix, jobs = "race", 20
    store = ScheduleStore(redis_client, key_prefix=prefix)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    fire = midnight.strftime("%Y-%m-%dT%H:%M:%SZ")
    for i in range(jobs):
        name = f"job{i:02d}"
        store.add_job(
            JobSpec.model_validate(
                {"name": name, "cron": "0 0 * * *", "catchup_window_s": 86_400,
                 "overlap": "allow", "run": {"agent": "demo.counter"}}
            )
        )  # fmt: skip
        # As if a beat had reserved today's fire and then died: it is due for everyone.
        store.compare_and_set(
            name, expect={}, values={"schedule_key": "0 0 * * *|UTC", "next_fire": fire}
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXECUTUS_", "CELERY_"))}
    env |= {"EXECUTUS_REDIS_URL": redis_url, "EXECUTUS_KEY_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "celery", "-A", "executus_worker.worker", "beat",
            "-S", "beat.scheduler:ExecutusScheduler", "--loglevel", "INFO"]  # fmt: skip
    procs = [
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs: list[str] = []
    try:
        deadline = time.monotonic() + 60
        names = [f"job{i:02d}" for i in range(jobs)]
        while time.monotonic() < deadline:
            states = store.states(names)
            if all(s.last_outcome == "enqueued" for s in states.values()):
                break
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.1)
        time.sleep(1.0)  # give a late loser the chance to (wrongly) send a second message
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=20)[0])
            except subprocess.TimeoutExpired:
                proc.kill()
                outputs.append(proc.communicate()[0])
    joined = "\n".join(outputs)
    runs = RedisStore(redis_client, key_prefix=prefix)
    expected = sorted(f"sched:job{i:02d}:{fire}" for i in range(jobs))
    assert sorted(r.run_id for r in runs.list_runs(limit=1000)) == expected, joined
    assert redis_client.llen("executus") == jobs, joined
    assert all(s.fires == 1 for s in store.states(f"job{i:02d}" for i in range(jobs)).values())
    enqueued_by = [out.count(": enqueued sched:") for out in outputs]
    assert sum(enqueued_by) == jobs, enqueued_by
    assert "Traceback" not in joined, joined
