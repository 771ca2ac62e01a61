"""The main process's scrape: every process's files merged, dead processes' gauges dropped,
queue depth and unfinished runs read from Redis at scrape time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from executus_worker.observability.exposition import MultiprocDir, WorkerCollector, scrape_client

# A separate process in multiprocess mode: two runs started, one ended, then it exits -- as a
# prefork child killed mid-run would, leaving active_runs=1 in its file.
CHILD = textwrap.dedent(
    """
    from executus_worker.observability.prometheus import PrometheusMetrics
    m = PrometheusMetrics()
    m.run_started("demo.counter"); m.run_started("demo.counter"); m.run_ended("demo.counter")
    m.run_status("completed")
    m.duplicate_dropped()
    """
)


def write_from_process(directory: Path) -> None:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory))
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60)


def scrape(collector: WorkerCollector) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_a_dead_process_keeps_its_counters_but_not_its_active_runs(tmp_path: Path) -> None:
    directory = MultiprocDir(tmp_path / "m")
    directory.prepare()
    write_from_process(tmp_path / "m")
    assert list((tmp_path / "m").glob("gauge_livesum_*.db"))
    collector = WorkerCollector(
        directory, broker=None, queues=[], store=None, active_index_keys=["x"]
    )
    samples = scrape(collector)
    assert samples["executus_runs_total{status=completed}"] == 1
    assert samples["executus_duplicate_deliveries_dropped_total"] == 1
    # Its gauge file is gone: the run it was executing is not counted as active any more.
    assert samples.get("executus_active_runs", 0) == 0
    assert not list((tmp_path / "m").glob("gauge_livesum_*.db"))


def test_prepare_empties_a_given_directory_and_a_temporary_one_is_removed(
    tmp_path: Path,
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    MultiprocDir(given).prepare()
    assert list(given.iterdir()) == []
    temporary = MultiprocDir(None)
    path = temporary.prepare()
    assert path.is_dir()
    temporary.remove()
    assert not path.exists()


def test_reap_keeps_the_files_of_live_processes(tmp_path: Path) -> None:
    directory = MultiprocDir(tmp_path)
    directory.prepare()
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / "gauge_livesum_999999999.db").write_bytes(b"")
    (tmp_path / "counter_999999999.db").write_bytes(b"")
    assert directory.reap() == [999999999]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_999999999.db", f"gauge_livesum_{os.getpid()}.db",
    ]  # fmt: skip


@pytest.mark.redis
def test_queue_depth_counts_every_priority_and_unfinished_runs_the_active_index(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    queue, active = f"q-{uuid.uuid4().hex[:8]}", f"p{uuid.uuid4().hex[:8]}:runs:active"
    try:
        client.rpush(queue, "a", "b")
        client.rpush(f"{queue}\x06\x169", "c")  # kombu's list for priority 9
        client.zadd(active, {"r1": 1, "r2": 2, "r3": 3})
        directory = MultiprocDir(tmp_path)
        directory.prepare()
        collector = WorkerCollector(
            directory,
            broker=scrape_client(redis_url),
            queues=[queue, "empty-q"],
            store=scrape_client(redis_url),
            active_index_keys=[active],
        )
        samples = scrape(collector)
        assert samples[f"executus_queue_depth{{queue={queue}}}"] == 3
        assert samples["executus_queue_depth{queue=empty-q}"] == 0
        assert samples["executus_unfinished_runs"] == 3
    finally:
        client.delete(queue, f"{queue}\x06\x169", active)
        client.close()


def test_an_unreachable_broker_leaves_the_redis_gauges_out_of_the_scrape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = MultiprocDir(tmp_path)
    directory.prepare()
    dead = scrape_client("redis://127.0.0.1:9/0")  # discard port: nothing listens
    collector = WorkerCollector(
        directory, broker=dead, queues=["q"], store=dead, active_index_keys=["x"]
    )
    samples = scrape(collector)
    assert not any(
        name.startswith(("executus_queue_depth", "executus_unfinished")) for name in samples
    )
    assert "queue depth not read" in caplog.text
