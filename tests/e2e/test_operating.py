"""Operating a real worker: its metrics scraped over HTTP, its JSON logs, its health file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from executus_worker.core.models import RunStatus

from .harness import Cluster, wait_for

pytestmark = pytest.mark.e2e

EXECUTUS_WORKER = str(Path(sys.executable).with_name("executus-worker"))


def health(path: Path, *flags: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """The liveness probe as Kubernetes runs it: a separate process, no broker settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTUS_")}
    env |= {"EXECUTUS_HEALTH_FILE": str(path), **settings}
    argv = [EXECUTUS_WORKER, "health", *flags]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> dict[str, float]:
    """Every sample as ``name{k=v,...}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_a_prefork_worker_serves_every_processs_metrics_and_forgets_a_killed_childs_runs(
    cluster: Cluster, tmp_path: Path, timing
) -> None:
    port = free_port()
    health_file = tmp_path / "worker.health"
    worker = cluster.start(
        "prefork",
        concurrency=2,
        EXECUTUS_METRICS_PORT=str(port),
        EXECUTUS_METRICS_ADDR="127.0.0.1",
        EXECUTUS_METRICS_DIR=str(tmp_path / "metrics"),
        EXECUTUS_HEALTH_FILE=str(health_file),
        EXECUTUS_LOG_FORMAT="json",
    )
    # `ready.` is logged after worker_ready, and the state is written on the next tick.
    probe = wait_for(
        "a ready heartbeat",
        lambda: (p := health(health_file, "--ready")).returncode == 0 and p,
        30,
        0.5,
    )
    assert probe.stdout.startswith("healthy: ready")

    first = cluster.register("e2e.counter", steps=3, step_s=0.05)
    second = cluster.submit("e2e.counter", steps=2, step_s=0.05)
    cluster.publish(first)
    assert first.run_id is not None
    for run_id in (first.run_id, second):
        cluster.wait_status(run_id, RunStatus.COMPLETED)
    cluster.publish(first)  # a late duplicate: the claim drops it

    # A run whose prefork child is SIGKILLed mid-step: its active-runs share must not linger.
    long = cluster.submit("e2e.counter", steps=5, step_s=0.4)
    cluster.wait_steps_ended(long, 1)
    child = cluster.steps(long, "start")[-1]["pid"]
    assert child in worker.children()
    os.kill(child, signal.SIGKILL)
    cluster.wait_status(long, RunStatus.COMPLETED, timeout_s=60)

    def settled() -> dict[str, float] | None:
        samples = scrape(port)
        done = samples.get("executus_runs_total{status=completed}", 0) == 3
        return samples if done and samples.get("executus_active_runs") == 0 else None

    wait_for("the scrape to show 3 completed runs and none active", settled, 30, 0.5)
    started = time.monotonic()
    samples = scrape(port)
    timing("one scrape (3 processes' files, 2 Redis reads)", time.monotonic() - started)
    assert samples["executus_duplicate_deliveries_dropped_total"] >= 1
    assert samples["executus_run_attempts_total{agent=e2e.counter}"] >= 4
    # Every step of every attempt that finished it was timed (10 steps, plus re-runs).
    assert samples["executus_step_duration_seconds_count{agent=e2e.counter}"] >= 10
    assert samples["executus_checkpoint_save_seconds_count{op=save}"] >= 5
    assert samples["executus_checkpoint_save_seconds_count{op=finish}"] == 3
    assert samples[f"executus_queue_depth{{queue={cluster.queue}}}"] == 0
    assert samples["executus_unfinished_runs"] == 0
    # The values came from more than one process (the children), merged by the main one.
    assert len(list((tmp_path / "metrics").glob("counter_*.db"))) >= 2

    # Logs: one JSON object per line; every line about a run names it, its epoch and worker.
    lines = [json.loads(x) for x in worker.text().splitlines() if x.startswith("{")]
    assert lines, worker.text()[-2000:]
    about = [x for x in lines if second in str(x["msg"])]
    assert about and all(x.get("run_id") == second and x.get("worker") for x in about), about
    finished = next(x for x in about if "completed after" in str(x["msg"]))
    assert (finished["epoch"], finished["step"]) == (1, 2)

    worker.signal(signal.SIGTERM)
    worker.wait_exit(timeout_s=30)
    assert not health_file.exists()  # a clean exit removes it
    gone = health(health_file)
    assert gone.returncode == 1 and "no heartbeat file" in gone.stdout


def test_a_stopped_worker_fails_the_liveness_probe_within_the_stale_limit(
    cluster: Cluster, tmp_path: Path, timing
) -> None:
    """SIGSTOP freezes the main process (as a wedged interpreter would): its heartbeat ages."""
    health_file = tmp_path / "worker.health"
    fast = {"EXECUTUS_HEALTH_INTERVAL_S": "0.2", "EXECUTUS_HEALTH_STALE_S": "2"}
    worker = cluster.start("threads", EXECUTUS_HEALTH_FILE=str(health_file), **fast)
    assert health(health_file).returncode == 0
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        probe = wait_for(
            "the probe to fail",
            lambda: (p := health(health_file, **fast)).returncode == 1 and p,
            30,
            0.2,
        )
        timing(
            "liveness probe failing after SIGSTOP (stale limit 2 s)", time.monotonic() - stopped_at
        )
        assert "stalled" in probe.stdout
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    wait_for(
        "a fresh heartbeat after SIGCONT", lambda: health(health_file).returncode == 0, 30, 0.2
    )
