"""``Client.events`` and ``executus-worker events`` on a private real Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner

from executus_worker import cli
from executus_worker.client import Client
from executus_worker.core.models import RunStatus
from executus_worker.errors import RunNotFoundError
from executus_worker.settings import Settings

pytestmark = pytest.mark.redis


class NoBroker:
    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        return None

    def close(self) -> None:
        return None


@pytest.fixture
def client(redis_url: str, redis_client: redis.Redis) -> Iterator[Client]:
    # No worker runs here: the live-agent check at enqueue is tested with the client.
    no_workers = Settings.model_construct(check_agents_on_enqueue=False)
    with Client.from_url(redis_url, settings=no_workers) as c:
        c._publisher = NoBroker()
        yield c


def finish(client: Client, run_id: str, status: RunStatus = RunStatus.COMPLETED) -> None:
    claim = client.store.claim(run_id, owner="t", lease_ttl_s=30, max_attempts=5, now=1.0)
    client.store.finish(
        run_id, fence=claim.fence, status=status, output=None, error=None, base_len=0,
        new_messages=[], now=2.0, result_ttl_s=60,
    )  # fmt: skip


def test_enqueue_records_an_enqueued_event(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 1})
    (event,) = client.events(run_id)
    assert (event.event, event.data) == ("enqueued", {"agent": "demo.counter", "queue": "executus"})
    client.enqueue(agent="demo.counter", input={"steps": 1}, run_id=run_id)  # a repeat: nothing
    assert len(list(client.events(run_id))) == 1


def test_an_unknown_run_is_an_error(client: Client) -> None:
    with pytest.raises(RunNotFoundError):
        list(client.events("nope"))


def test_follow_yields_new_events_and_ends_with_the_run(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 1})

    def worker() -> None:
        time.sleep(0.2)
        client.event_log.append(run_id, "step", {"iteration": 1})
        time.sleep(0.2)
        client.event_log.append(run_id, "completed", {"iterations": 1})

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        names = [e.event for e in client.events(run_id, follow=True, timeout_s=30)]
    finally:
        thread.join()
    assert names == ["enqueued", "step", "completed"]


def test_follow_of_a_finished_run_without_its_last_event_ends_after_a_grace(
    client: Client,
) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 1})
    finish(client, run_id)  # terminal record, no terminal event (events lost with a process)
    started = time.monotonic()
    names = [e.event for e in client.events(run_id, follow=True, timeout_s=60)]
    assert names == ["enqueued"]
    assert time.monotonic() - started < 30


def test_follow_gives_up_at_its_timeout(client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 1})
    assert [e.event for e in client.events(run_id, follow=True, timeout_s=0.3)] == ["enqueued"]


def test_events_are_not_written_when_the_stream_is_off(redis_url: str, client: Client) -> None:
    with Client.from_url(redis_url, settings=client.settings.model_copy(
        update={"audit_stream": False})) as quiet:  # fmt: skip
        quiet._publisher = NoBroker()
        run_id = quiet.enqueue(agent="demo.counter", input={"steps": 1})
        assert list(quiet.events(run_id)) == []


def test_the_events_command_prints_lines_and_json(redis_url: str, client: Client) -> None:
    run_id = client.enqueue(agent="demo.counter", input={"steps": 1})
    client.event_log.append(
        run_id, "failed", {"error": "ValueError: x", "traceback": "Traceback (most...)\n  line"}
    )
    env = {"EXECUTUS_REDIS_URL": redis_url, "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false"}
    text = CliRunner().invoke(cli.main, ["events", run_id], env=env)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert "enqueued" in lines[0] and "agent=demo.counter" in lines[0]
    assert "failed" in lines[1] and 'error="ValueError: x"' in lines[1]
    assert lines[2:] == ["    Traceback (most...)", "      line"]
    as_json = CliRunner().invoke(cli.main, ["events", run_id, "--json", "--follow"], env=env)
    assert as_json.exit_code == 0, as_json.output
    assert [json.loads(line)["event"] for line in as_json.stdout.splitlines()] == [
        "enqueued",
        "failed",
    ]
    missing = CliRunner().invoke(cli.main, ["events", "nope"], env=env)
    assert missing.exit_code == 1 and "not found" in missing.stderr
