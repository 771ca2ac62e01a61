"""Servers configured tight, or cut off from Redis: stream slots, a stream's time limit and its
keep-alives, a smaller body cap, an open API on loopback, and 503s while Redis is away."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from executus_worker.embedded import free_port

from .harness import ApiServer, SseEvent

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tight(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    log = tmp_path_factory.mktemp("tight") / "api.log"
    env = {
        "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false",
        "EXECUTUS_API_MAX_STREAMS": "1",
        "EXECUTUS_API_STREAM_MAX_S": "2",
        "EXECUTUS_API_STREAM_HEARTBEAT_S": "0.3",
        "EXECUTUS_API_MAX_BODY_BYTES": "2048",
        "EXECUTUS_API_MAX_JSON_DEPTH": "5",
    }
    server = ApiServer(redis_url, log, env=env).start()
    yield server
    server.stop()


def queued_run(api: ApiServer) -> str:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    body = {"run_id": run_id, "agent": "demo.counter"}
    assert api.request("POST", "/v1/runs", json_body=body).status == 201
    return run_id


def test_a_stream_ends_at_its_time_limit_and_is_kept_alive_meanwhile(tight: ApiServer) -> None:
    run_id = queued_run(tight)  # no worker: it stays queued
    started = time.monotonic()
    with tight.stream(f"/v1/runs/{run_id}/events") as (_, stream):
        seen = list(stream)
    elapsed_s = time.monotonic() - started
    events = [e for e in seen if isinstance(e, SseEvent)]
    assert events[-1].data == {"reason": "timeout", "status": "queued"}
    assert seen.count(": keep-alive") >= 2
    assert elapsed_s >= 2  # a lower bound only: the box may be slow


def test_streams_past_the_limit_are_refused_with_503(tight: ApiServer) -> None:
    run_id = queued_run(tight)
    with tight.stream(f"/v1/runs/{run_id}/events") as (response, stream):
        assert response.status == 200
        next(stream)  # the first event: the stream is open and counted
        second = tight.request("GET", f"/v1/runs/{run_id}/events")
        assert second.status == 503
        assert second.error["code"] == "too_many_streams"
    # Closed by the client: the slot is free again once the server notices.
    deadline = time.monotonic() + 30
    while tight.request("GET", f"/v1/runs/{run_id}/events?after=0").status != 200:
        assert time.monotonic() < deadline, "the stream slot was never released"
        time.sleep(0.2)


def test_the_configured_caps_apply(tight: ApiServer) -> None:
    big = {"agent": "demo.counter", "input": {"text": "x" * 3000}}
    reply = tight.request("POST", "/v1/runs", json_body=big)
    assert reply.status == 413
    assert "2048-byte limit" in reply.error["message"]
    deep = {"agent": "demo.counter", "input": {"a": {"b": {"c": {"d": [1]}}}}}  # 6 levels
    reply = tight.request("POST", "/v1/runs", json_body=deep)
    assert reply.status == 422
    assert "deeper than 5 levels" in reply.error["message"]


def test_without_a_token_a_loopback_api_serves_anyone_local(redis_url: str, tmp_path: Path) -> None:
    env = {"EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false"}
    api = ApiServer(redis_url, tmp_path / "api.log", token=None, env=env).start()
    try:
        assert api.request("GET", f"/v1/runs/{uuid.uuid4().hex}").status == 404
        assert "NO TOKEN: loopback only" in api.log()
    finally:
        api.stop()


def test_while_redis_is_away_requests_get_503_and_the_process_stays_up(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    api = ApiServer(dead, tmp_path / "api.log").start()
    try:
        assert api.request("GET", "/healthz").status == 200
        for method, path, body in [
            ("GET", "/readyz", None),
            ("GET", "/v1/runs/some-run", None),
            ("GET", "/v1/runs/some-run/events", None),
            ("POST", "/v1/runs", {"agent": "demo.counter", "run_id": "r1"}),
        ]:
            reply = api.request(method, path, json_body=body)
            assert reply.status == 503, (path, reply.body)
            assert reply.error["code"] == "store_unavailable"
            assert reply.error["message"].startswith("the run store is unavailable: ")
        assert api.proc is not None and api.proc.poll() is None
    finally:
        api.stop()
