"""Every benchmark script still runs: each once with tiny sizes, writing nothing.

The numbers are not checked (no timed assertions here); the point is that a refactor which
breaks a benchmark fails CI instead of being found the next time someone wants numbers.
The selected scripts run a few at a time (most of a smoke run waits for worker boots and
sleeps rather than computing), each test collecting its own script's outcome.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from executus_worker.embedded import EmbeddedRedis

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Tiny sizes per script, and whatever keeps it from writing RESULTS.md. A new script must be
# added here, or the test below fails.
TINY: dict[str, list[str]] = {
    "api_bench.py": [
        "--requests", "20", "--threads", "2", "--streams", "2", "--stream-seconds", "0.5",
        "--no-write",
    ],
    "audit_bench.py": [
        "--reps", "1", "--runs", "1", "--steps", "2", "--noop-runs", "10", "--no-write",
    ],
    "broker_publish_bench.py": ["--runs", "20", "--repeats", "1", "--no-write"],
    "capacity_bench.py": [
        "--levels", "40", "--processes", "2", "--warmup-s", "0.2", "--window-s", "1",
        "--calibration-ops", "20", "--idle-s", "0.2", "--no-write",
    ],
    "checkpoint_bench.py": [
        "--reps", "1", "--runs", "1", "--steps", "2", "--sweep-runs", "20", "--no-write",
    ],
    "crash_bench.py": [
        "--repeats", "1", "--lease-ttl-s", "2", "--sweep-interval-s", "0.5", "--step-s", "0.1",
        "--no-write",
    ],
    "dispatch_bench.py": [
        "--runs", "10", "--repeats", "1", "--pools", "solo:1", "--latency-messages", "3",
        "--latency-warmup", "1", "--no-write",
    ],
    "recovery_bench.py": ["--smoke"],
    "renew_bench.py": ["--sizes", "1,10", "--reps", "3", "--no-write"],
    "step_bench.py": ["--sizes", "10", "--repeats", "1", "--no-write"],
}  # fmt: skip
# Modules the scripts import, not scripts (tests/bench/test_results.py tests the writer).
HELPERS = {"results.py"}
# Scripts that start real `celery worker` processes; scripts that need the machine's RabbitMQ.
STARTS_WORKERS = {"crash_bench.py", "dispatch_bench.py"}
NEEDS_RABBITMQ = {"broker_publish_bench.py"}


def test_every_bench_script_has_a_smoke_run() -> None:
    scripts = sorted(p.name for p in BENCH.glob("*.py") if p.name not in HELPERS)
    assert scripts == sorted(TINY), "add tiny arguments for new bench scripts to TINY"


# How many smoke runs at once, and which to start first (the longest: they start workers).
PARALLEL = 3
FIRST = ("crash_bench.py", "dispatch_bench.py")
RESULTS = BENCH / "RESULTS.md"


def _run(script: str, cwd: Path, extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *TINY[script], *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def smoke_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Future[subprocess.CompletedProcess[str]]], bytes | None]]:
    """Starts the smoke run of every selected script; yields their futures and RESULTS.md as
    it was before any of them ran."""
    # The scripts start their own redis-server; the fixture only applies the session's rule
    # for a machine without one (skip locally, fail under CI).
    request.getfixturevalue("redis_server")
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_bench_script_runs_with_tiny_sizes"
    }
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    futures: dict[str, Future[subprocess.CompletedProcess[str]]] = {}
    with ThreadPoolExecutor(PARALLEL) as pool:
        for script in sorted(selected, key=lambda name: (name not in FIRST, name)):
            extra: list[str] = []
            if script in NEEDS_RABBITMQ:
                try:
                    extra = ["--amqp-url", request.getfixturevalue("rabbitmq_url")]
                except pytest.skip.Exception:
                    continue  # its own test asks for RabbitMQ again: skipped (or failed in CI)
            cwd = tmp_path_factory.mktemp(script.removesuffix(".py"))
            futures[script] = pool.submit(_run, script, cwd, extra)
        yield futures, before


@pytest.mark.redis
@pytest.mark.parametrize(
    "script",
    [
        pytest.param(name, marks=[pytest.mark.e2e] if name in STARTS_WORKERS else [])
        for name in sorted(TINY)
    ],
)
def test_bench_script_runs_with_tiny_sizes(
    script: str,
    smoke_runs: tuple[dict[str, Future[subprocess.CompletedProcess[str]]], bytes | None],
    request: pytest.FixtureRequest,
) -> None:
    if script in NEEDS_RABBITMQ:
        request.getfixturevalue("rabbitmq_url")  # the session's rule for a missing RabbitMQ
    futures, before = smoke_runs
    proc = futures[script].result(timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.strip(), "the script printed no results"
    after = RESULTS.read_bytes() if RESULTS.exists() else None
    assert after == before, f"a smoke run rewrote RESULTS.md ({script}, or one running beside it)"


def test_make_bench_runs_every_bench_script() -> None:
    makefile = (BENCH.parent / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("BENCH_SCRIPTS ="))
    listed = sorted(f"{name}_bench.py" for name in line.split("=", 1)[1].split())
    assert listed == sorted(TINY), "make bench must run every bench script (BENCH_SCRIPTS)"


@pytest.mark.redis
def test_the_capacity_bench_runs_on_a_redis_cluster_with_tiny_sizes(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """``--cluster``: the same load on a private three-master cluster (it starts its own)."""
    results = RESULTS
    before = results.read_bytes() if results.exists() else None
    argv = [sys.executable, str(BENCH / "capacity_bench.py"), *TINY["capacity_bench.py"]]
    proc = subprocess.run(
        [*argv, "--cluster"], cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "busiest master" in proc.stdout and "3-master Redis Cluster" in proc.stdout
    assert (results.read_bytes() if results.exists() else None) == before
