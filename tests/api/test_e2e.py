"""The API with real workers: enqueue over HTTP, follow the run's event stream to the end,
including across a warm shutdown and a resume by another worker."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e.harness import Cluster, counter_transcript

from .harness import ApiServer, SseEvent

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(redis_url, tmp_path)
    yield world
    world.close()


def api_for(cluster: Cluster, tmp_path: Path, **env: str) -> ApiServer:
    """An API server on the cluster's Redis, key prefix and queue (the live-agent check on)."""
    server = ApiServer(cluster.redis_url, tmp_path / "api.log", env=env)
    server.prefix, server.queue = cluster.prefix, cluster.queue
    return server


@pytest.fixture
def servers() -> Iterator[list[ApiServer]]:
    started: list[ApiServer] = []
    yield started
    for server in started:
        server.stop()


def test_enqueue_then_the_stream_shows_every_step_until_completed(
    cluster: Cluster, tmp_path: Path, servers: list[ApiServer], timing: Any
) -> None:
    cluster.start("threads")
    api = api_for(cluster, tmp_path, EXECUTUS_API_STREAM_POLL_S="0.1").start()
    servers.append(api)
    request = {"run_id": "e2e-api-1", "agent": "e2e.counter", "input": {"steps": 4, "step_s": 0.2}}
    started = time.monotonic()
    reply = api.request("POST", "/v1/runs", json_body=request)
    assert reply.status == 201, reply.body
    with api.stream("/v1/runs/e2e-api-1/events") as (response, stream):
        assert response.status == 200
        events = [e for e in stream if isinstance(e, SseEvent)]
    timing("enqueue to the stream's end, 4 steps of 0.2 s", time.monotonic() - started)

    messages = [e for e in events if e.event == "message"]
    assert [e.data["message"]["content"] for e in messages] == counter_transcript(4)
    assert [e.id.split("/")[0] for e in messages if e.id] == ["1", "2", "3", "4"]
    audit = [e.data["event"] for e in events if e.event == "audit"]
    assert audit == ["enqueued", "claimed", "started", "step", "step", "step", "step", "completed"]
    assert [e.data["index"] for e in messages] == [0, 1, 2, 3]
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses[-1] == "completed"
    assert "running" in statuses
    assert not [e for e in events if e.event in {"rewind", "error"}]
    final = [e for e in events if e.event == "status"][-1].data
    assert (final["output"], final["messages"]) == ("done 4", 4)
    assert events[-1].event == "end"
    assert events[-1].data == {"reason": "terminal", "status": "completed"}

    transcript = api.request("GET", "/v1/runs/e2e-api-1/transcript").json()
    assert [m["content"] for m in transcript["messages"]] == counter_transcript(4)
    # The enqueue again (a retry): the same run, nothing re-run.
    assert api.request("POST", "/v1/runs", json_body=request).status == 200
    assert cluster.ended("e2e-api-1") == counter_transcript(4)


def test_the_stream_follows_a_run_through_warm_shutdown_and_resume(
    cluster: Cluster, tmp_path: Path, servers: list[ApiServer]
) -> None:
    a = cluster.start("threads")
    api = api_for(
        cluster, tmp_path, EXECUTUS_API_STREAM_POLL_S="0.1", EXECUTUS_API_STREAM_HEARTBEAT_S="0.5"
    ).start()
    servers.append(api)
    request = {"run_id": "e2e-api-2", "agent": "e2e.counter", "input": {"steps": 6, "step_s": 0.3}}
    assert api.request("POST", "/v1/runs", json_body=request).status == 201
    seen: list[SseEvent | str] = []
    with api.stream("/v1/runs/e2e-api-2/events") as (_, stream):
        for item in stream:
            seen.append(item)
            if isinstance(item, SseEvent) and item.event == "message" and item.data["index"] == 1:
                a.signal(signal.SIGTERM)
                a.wait_exit(timeout_s=30)
                cluster.start("threads")  # boots while the stream stays open
    events = [e for e in seen if isinstance(e, SseEvent)]
    contents = [e.data["message"]["content"] for e in events if e.event == "message"]
    assert contents == counter_transcript(6)  # each step once, in order, across two owners
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert "interrupted" in statuses
    assert statuses[statuses.index("interrupted") :][-1] == "completed"
    last = [e for e in events if e.event == "status"][-1].data
    assert last["attempts"] == 2
    assert not [e for e in events if e.event == "rewind"]
    # The run's recorded story comes along: the stop, the recovery, the resume.
    audit = [e.data["event"] for e in events if e.event == "audit"]
    assert audit[:3] == ["enqueued", "claimed", "started"]
    assert audit[-1] == "completed"
    stop = audit.index("interrupted")
    # (The recovery is recorded with the next claim, in either order within that write.)
    assert audit[stop] == "interrupted"
    assert sorted(audit[stop + 1 : stop + 3]) == ["claimed", "recovered"]
    assert audit[stop + 3] == "resumed"
    assert audit.count("step") == 6
    # The new worker took seconds to boot: the quiet stream was kept alive meanwhile.
    assert ": keep-alive" in seen
    assert events[-1].data == {"reason": "terminal", "status": "completed"}
