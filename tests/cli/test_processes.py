"""``worker``, ``beat`` and ``dev``: the Celery command lines, and real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from executus_worker.cli import processes
from executus_worker.client import Client

from .clitools import assert_clean_error, run


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Capture the argv `worker`/`beat` would exec into, instead of replacing pytest."""
    calls: list[list[str]] = []
    monkeypatch.setattr(processes, "exec_celery", lambda argv: calls.append(list(argv)))
    yield calls


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


# -- dev (real processes) ------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.redis
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
@pytest.mark.redis
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc (Linux)")
def test_worker_execs_so_sigterm_reaches_celery_main_process_directly(
    redis_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "EXECUTUS_REDIS_URL": redis_url}
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "executus_worker.cli", "worker", "-P", "solo", "-l", "INFO"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # Same pid, new program: the process we started *is* Celery's main process.
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        deadline = time.monotonic() + 30
        # (Not b"celery": the checkout's own path may contain it.)
        celery_argv = b"executus_worker.worker\0worker"
        while celery_argv not in cmdline.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert celery_argv in cmdline.read_bytes()
        # A SIGTERM before Celery installs its handlers kills it with the default action:
        # wait for Celery's own "ready" line rather than guessing a boot time.
        deadline = time.monotonic() + 90
        while b" ready." not in log.read_bytes() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert b" ready." in log.read_bytes(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
