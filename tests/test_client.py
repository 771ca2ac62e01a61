"""The public client against a private real Redis; the broker list is inspected, no worker runs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from executus_worker.client import Client, JobSpec, PublishError, RunConflictError, WaitTimeout
from executus_worker.core.models import Message, RunRequest, RunStatus
from executus_worker.embedded import free_port
from executus_worker.errors import (
    ConfigError,
    ExecutusError,
    PayloadError,
    RunNotFoundError,
    ScheduleError,
)
from executus_worker.settings import Settings

pytestmark = pytest.mark.redis

DEFAULT_QUEUE = "executus"
# No worker runs in these tests: the live-agent check at enqueue is tested in test_agents.py.
NO_WORKERS = {"check_agents_on_enqueue": False}


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[Client]:
    with Client.from_url(redis_url, settings=Settings.model_construct(**NO_WORKERS)) as c:
        yield c


def published(r: redis.Redis, queue: str = DEFAULT_QUEUE) -> list[dict[str, Any]]:
    """The messages waiting on a queue, decoded as a Celery worker would (oldest first)."""
    out = []
    for raw in reversed(r.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        out.append({"task": envelope["headers"]["task"], "args": args, "kwargs": kwargs})
    return out


def finish_run(client: Client, run_id: str, messages: list[Message], output: Any) -> None:
    """Play the worker's part directly on the store: claim, then finish as completed."""
    claim = client.store.claim(run_id, owner="test", lease_ttl_s=30, max_attempts=5, now=1.0)
    client.store.finish(
        run_id,
        fence=claim.fence,
        status=RunStatus.COMPLETED,
        output=output,
        error=None,
        base_len=0,
        new_messages=messages,
        now=time.time(),
        result_ttl_s=60,
    )


# -- enqueue -------------------------------------------------------------------------------


def test_enqueue_registers_then_publishes_exactly_one_message(
    client: Client, redis_client: redis.Redis
) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 2, "step_s": 0})

    record = client.status(run_id)
    assert record.status is RunStatus.QUEUED
    assert record.queue == DEFAULT_QUEUE
    assert record.request.input == {"steps": 2, "step_s": 0}
    [message] = published(redis_client)
    assert message["task"] == "executus.run"
    assert message["kwargs"] == {}
    sent_id, request_json = message["args"]
    assert sent_id == run_id
    assert isinstance(request_json, str)  # a JSON string, as the published schema says
    sent = RunRequest.parse(request_json, max_bytes=10_000)
    assert sent.run_id == run_id
    assert sent.agent == "demo.counter"


def test_enqueue_without_run_id_generates_a_uuid4_hex(client: Client) -> None:
    first = client.enqueue(agent="demo.counter")
    second = client.enqueue(agent="demo.counter")
    assert first != second
    assert len(first) == 32
    assert int(first, 16) >= 0


def test_enqueue_with_an_existing_run_id_and_the_same_request_returns_it_and_sends_nothing(
    client: Client, redis_client: redis.Redis
) -> None:
    first = client.enqueue(agent="demo.counter", input={"steps": 1}, run_id="job-1")
    # The same payload spelled differently (defaults explicit) is the same request.
    again = client.enqueue(
        agent="demo.counter", input={"steps": 1}, run_id="job-1", metadata={}, limits={}
    )
    assert first == again == "job-1"
    assert len(published(redis_client)) == 1


def test_enqueue_with_an_existing_run_id_and_a_different_request_is_a_conflict(
    client: Client, redis_client: redis.Redis
) -> None:
    client.enqueue(agent="demo.counter", input={"steps": 1, "step_s": 0}, run_id="job-1")
    with pytest.raises(RunConflictError) as caught:
        client.enqueue(
            agent="demo.counter",
            input={"steps": 9, "step_s": 0, "extra": True},
            run_id="job-1",
            guild_id="g2",
            limits={"max_iterations": 3},
        )
    conflict = caught.value
    assert isinstance(conflict, ExecutusError)
    assert conflict.run_id == "job-1"
    assert conflict.fields == ("input.steps", "input.extra", "guild_id", "limits.max_iterations")
    assert "differs in: input.steps, input.extra, guild_id, limits.max_iterations" in str(conflict)
    assert "\n" not in str(conflict)
    assert "9" not in str(conflict)  # names fields, never echoes values
    # Nothing changed and nothing sent.
    assert client.status("job-1").request.input == {"steps": 1, "step_s": 0}
    assert len(published(redis_client)) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent": "demo.phased"}, "agent"),
        ({"model_tier": "large"}, "model_tier"),
        ({"metadata": {"team": "b"}}, "metadata.team"),
        ({"input": {}}, "input.steps"),
    ],
)
def test_every_payload_field_is_bound_to_the_run_id(
    client: Client, change: dict[str, Any], field: str
) -> None:
    base: dict[str, Any] = {"agent": "demo.counter", "input": {"steps": 1}, "run_id": "r-9"}
    client.submit({**base, "metadata": {"team": "a"}})
    with pytest.raises(RunConflictError) as caught:
        client.submit({**base, "metadata": {"team": "a"}, **change})
    assert caught.value.fields == (field,)


def test_a_run_registered_without_run_id_in_its_request_matches_the_same_payload(
    client: Client, redis_client: redis.Redis
) -> None:
    """A worker registers a raw message's run with the id outside the request: same payload."""
    client.store.register(
        RunRequest(agent="demo.counter", input={"steps": 2}), run_id="raw-1",
        queue=DEFAULT_QUEUE, now=time.time(),
    )  # fmt: skip
    result = client.submit({"agent": "demo.counter", "input": {"steps": 2}, "run_id": "raw-1"})
    assert result.created is False
    assert published(redis_client) == []


def test_submit_reports_whether_it_created_the_run(client: Client) -> None:
    first = client.submit('{"agent": "demo.counter", "run_id": "r-1"}')
    again = client.submit({"agent": "demo.counter", "run_id": "r-1"})
    assert (first.created, again.created) == (True, False)
    assert again.run_id == "r-1"
    assert again.queue == DEFAULT_QUEUE


def test_a_model_tier_routes_to_its_queue(redis_url: str, redis_client: redis.Redis) -> None:
    settings = Settings.model_construct(tier_queues={"large": "executus.large"}, **NO_WORKERS)
    with Client.from_url(redis_url, settings=settings) as c:
        run_id = c.enqueue(agent="demo.counter", model_tier="large")
        other = c.enqueue(agent="demo.counter", model_tier="unknown-tier")
        assert c.status(run_id).queue == "executus.large"
    assert [m["args"][0] for m in published(redis_client, "executus.large")] == [run_id]
    assert [m["args"][0] for m in published(redis_client)] == [other]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"agent": "has spaces"}, id="bad-agent-name"),
        pytest.param({"agent": "demo.counter", "run_id": "no/slashes"}, id="bad-run-id"),
        pytest.param({"agent": "demo.counter", "limits": {"max_iterations": 0}}, id="bad-limit"),
        pytest.param({"agent": "demo.counter", "limits": {"nope": 1}}, id="unknown-field"),
        pytest.param({"agent": "demo.counter", "input": {"x": object()}}, id="not-json"),
        pytest.param({"agent": "demo.counter", "metadata": {"k": 1}}, id="metadata-not-str"),
    ],
)
def test_a_wrong_schema_request_is_rejected_and_nothing_is_registered(
    client: Client, redis_client: redis.Redis, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(PayloadError):
        client.enqueue(**kwargs)
    assert redis_client.dbsize() == 0


def test_an_oversized_request_is_rejected_and_nothing_is_registered(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = Settings.model_construct(max_payload_bytes=1024, **NO_WORKERS)
    with Client.from_url(redis_url, settings=settings) as c:
        c.enqueue(agent="demo.counter", input={"text": "x" * 700})  # under the cap
        redis_client.flushall()
        with pytest.raises(PayloadError, match="1024-byte limit"):
            c.enqueue(agent="demo.counter", input={"text": "x" * 1100})
        # Under the cap as passed, over it once the defaults are spelled out on the wire:
        # the worker would reject it, so the client must.
        with pytest.raises(PayloadError, match="as sent"):
            c.submit({"agent": "demo.counter", "run_id": "r", "input": {"t": "x" * 950}})
    assert redis_client.dbsize() == 0


# -- status, transcript, runs, cancel ------------------------------------------------------


def test_unknown_runs_raise_run_not_found(client: Client) -> None:
    for call in (client.status, client.transcript, client.cancel):
        with pytest.raises(RunNotFoundError):
            call("missing")
    with pytest.raises(RunNotFoundError):
        client.wait("missing", timeout_s=1)


def test_transcript_is_empty_while_queued_and_final_after_completion(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    assert client.transcript(run_id) == []

    steps = [Message(role="assistant", content=f"step {i}") for i in (1, 2)]
    finish_run(client, run_id, steps, output="done 2")

    assert client.transcript(run_id) == steps
    record = client.status(run_id)
    assert (record.status, record.output) == (RunStatus.COMPLETED, "done 2")


def test_cancel_ends_a_queued_run_at_once_and_is_repeatable(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    assert client.cancel(run_id).status is RunStatus.CANCELLED
    assert client.cancel(run_id).status is RunStatus.CANCELLED
    assert client.status(run_id).status is RunStatus.CANCELLED


def test_cancel_of_a_running_run_only_flags_it(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    client.store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=time.time())
    record = client.cancel(run_id)
    assert record.status is RunStatus.RUNNING
    assert record.cancel_requested


def test_runs_lists_and_filters_by_status(client: Client) -> None:
    ids = [client.enqueue(agent="demo.counter") for _ in range(3)]
    client.cancel(ids[0])

    assert {r.run_id for r in client.runs()} == set(ids)
    assert [r.run_id for r in client.runs(status="cancelled")] == [ids[0]]
    assert {r.run_id for r in client.runs(status=RunStatus.QUEUED)} == set(ids[1:])
    assert len(client.runs(limit=2)) == 2
    with pytest.raises(ValueError, match="bogus"):
        client.runs(status="bogus")


# -- wait ----------------------------------------------------------------------------------


def test_wait_times_out_with_the_last_record(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    start = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        client.wait(run_id, timeout_s=0.3)
    assert 0.3 <= time.monotonic() - start < 2
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, ExecutusError)
    assert caught.value.record.status is RunStatus.QUEUED


def test_wait_returns_once_the_run_is_terminal(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    worker = threading.Timer(
        0.3, finish_run, args=(client, run_id, [Message(role="assistant", content="x")], "ok")
    )
    worker.start()
    try:
        record = client.wait(run_id, timeout_s=10)
    finally:
        worker.join()
    assert record.status is RunStatus.COMPLETED
    assert record.output == "ok"


# -- construction and connections ---------------------------------------------------------


def test_from_url_connects_lazily_and_ignores_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECUTUS_KEY_PREFIX", "from-env")
    monkeypatch.setenv("EXECUTUS_MAX_PAYLOAD_BYTES", "2048")
    c = Client.from_url("redis://127.0.0.1:1/0")  # nothing listens there; nothing connects
    assert c.settings.key_prefix == "executus"
    assert c.settings.max_payload_bytes == Settings.model_construct().max_payload_bytes
    c.close()


def test_from_url_rejects_a_bad_url_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Client.from_url("http://user:s3cret@example.com/0")
    assert "s3cret" not in str(caught.value)


def test_key_prefix_namespaces_every_record_key(redis_url: str, redis_client: redis.Redis) -> None:
    no_workers = Settings.model_construct(**NO_WORKERS)
    with Client.from_url(redis_url, key_prefix="tenant-a", settings=no_workers) as c:
        run_id = c.enqueue(agent="demo.counter")
        assert c.status(run_id).run_id == run_id
    with Client.from_url(redis_url) as other, pytest.raises(RunNotFoundError):
        other.status(run_id)
    keys = {k.decode() for k in redis_client.keys("*")}
    assert keys - {DEFAULT_QUEUE}
    assert all(k.startswith("tenant-a:") for k in keys - {DEFAULT_QUEUE})


def test_a_closed_client_reconnects_on_next_use(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter")
    client.close()
    assert client.status(run_id).run_id == run_id
    client.enqueue(agent="demo.counter")


def test_importing_the_client_pulls_in_no_worker_batteries_or_celery() -> None:
    code = (
        "import sys, executus_worker.client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'celery'"
        " or m.startswith(('executus_worker.worker', 'executus_worker.batteries')))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_a_broker_failure_after_registration_is_a_publish_error(
    redis_url: str, redis_client: redis.Redis
) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    no_workers = Settings.model_construct(**NO_WORKERS)
    with Client.from_url(redis_url, broker_url=dead_broker, settings=no_workers) as c:
        with pytest.raises(PublishError) as caught:
            c.enqueue(agent="demo.counter", run_id="orphan")
        assert caught.value.run_id == "orphan"
        # Registered first, so the sweep owns it now; a retry neither fails nor re-sends.
        assert c.status("orphan").status is RunStatus.QUEUED
        assert c.enqueue(agent="demo.counter", run_id="orphan") == "orphan"


# -- schedules -----------------------------------------------------------------------------


def test_schedules_round_trip_through_redis(client: Client) -> None:
    job = {"name": "nightly", "cron": "0 3 * * *", "run": {"agent": "demo.counter"}}
    spec = client.add_schedule(job)
    assert spec.name == "nightly"

    [view] = client.schedules()
    assert (view.name, view.source, view.state) == ("nightly", "redis", "active")
    assert view.cron == spec.cron
    assert view.next_fire

    assert client.pause_schedule("nightly") is True
    assert client.schedules()[0].state == "paused"
    assert client.resume_schedule("nightly") is True
    assert client.schedules()[0].state == "active"

    client.remove_schedule("nightly")
    assert client.schedules() == []


def test_add_schedule_rejects_bad_jobs_and_duplicates(client: Client) -> None:
    with pytest.raises(ScheduleError, match="cron"):
        client.add_schedule({"name": "bad", "cron": "not a cron", "run": {"agent": "a"}})
    job = JobSpec(name="j", cron="@hourly", run=RunRequest(agent="demo.counter"))
    client.add_schedule(job)
    with pytest.raises(ScheduleError, match="exists"):
        client.add_schedule(job)
    client.add_schedule(job.model_copy(update={"cron": "@daily"}), replace=True)
    with pytest.raises(ScheduleError, match="no job"):
        client.remove_schedule("missing")


def _commands(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}


def test_with_the_broker_on_the_same_redis_an_enqueue_is_one_script_call(
    client: Client, redis_client: redis.Redis
) -> None:
    """Register, the enqueued event and the message in one script: one round trip, and no
    moment at which the run is registered but its message not yet pushed."""
    client.enqueue(agent="demo.counter", input={"steps": 1}, run_id="warm")  # loads the script
    redis_client.config_resetstat()
    run_id = client.enqueue(agent="demo.counter", input={"steps": 2})
    calls = _commands(redis_client)
    calls.pop("config|resetstat", None)
    # evalsha once; the LPUSH, XADD and HSET inside it are counted as the script's commands.
    assert calls.pop("evalsha") == 1
    assert set(calls) <= {"exists", "del", "hset", "zadd", "zrem", "xadd", "pexpire", "lpush"}
    (message,) = [m for m in published(redis_client) if m["args"][0] == run_id]
    assert message["task"] == "executus.run"
    assert [e.event for e in client.events(run_id)] == ["enqueued"]


def test_a_repeated_enqueue_pushes_nothing_and_writes_no_second_event(
    client: Client, redis_client: redis.Redis
) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 2}, run_id="again")
    assert (
        client.submit({"agent": "demo.counter", "input": {"steps": 2}, "run_id": run_id}).created
        is False
    )
    assert [m["args"][0] for m in published(redis_client)] == [run_id]
    assert [e.event for e in client.events(run_id)] == ["enqueued"]


def test_with_the_broker_on_another_database_the_message_is_published_there(
    redis_url: str, redis_client: redis.Redis
) -> None:
    kwargs = redis_client.connection_pool.connection_kwargs
    broker_url = f"redis://{kwargs['host']}:{kwargs['port']}/5"
    settings = Settings.model_construct(**NO_WORKERS, broker_url=broker_url)
    with Client.from_url(redis_url, settings=settings) as c:
        run_id = c.enqueue(agent="demo.counter", input={"steps": 1})
    broker = redis.Redis.from_url(broker_url)
    try:
        assert [m["args"][0] for m in published(broker)] == [run_id]
        assert published(redis_client) == []
    finally:
        broker.flushdb()
        broker.close()
