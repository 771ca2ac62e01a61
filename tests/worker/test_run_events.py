"""Run events end to end in one process: the client, the worker's handler and the recovery
sweep write them to the run's stream; ``Client.events`` reads them back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from executus_worker.client import Client
from executus_worker.core.models import RunStatus
from executus_worker.core.stop import StopToken
from executus_worker.errors import PayloadError
from executus_worker.settings import Settings
from executus_worker.worker.runtime import Runtime

pytestmark = pytest.mark.redis


class Collect:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None:
        self.messages.append((run_id, request_json))

    def publish_many(self, messages: object) -> int:
        return 0

    def close(self) -> None:
        return None


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis) -> Settings:
    # No worker process advertises itself here: the handler is called in process.
    return Settings(
        redis_url=redis_url,
        key_prefix=f"ev{uuid.uuid4().hex[:8]}",
        check_agents_on_enqueue=False,
    )


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[Client, Runtime, Collect]]:
    publisher = Collect()
    runtime = Runtime(settings, drain=StopToken())
    with Client(settings, publisher=publisher) as client:
        yield client, runtime, publisher
    runtime.close()


def test_a_run_leaves_its_whole_story_in_its_stream(world) -> None:  # type: ignore[no-untyped-def]
    client, runtime, publisher = world
    run_id = client.enqueue(agent="demo.counter", input={"steps": 2, "step_s": 0})
    handled = runtime.handler().handle(list(publisher.messages[0]), {})
    assert handled.outcome is not None and handled.outcome.value == "completed"
    events = list(client.events(run_id, follow=True, timeout_s=10))
    assert [e.event for e in events] == ["enqueued", "claimed", "started", "step", "step",
                                         "completed"]  # fmt: skip
    claimed = events[1].data
    assert claimed["epoch"] == 1 and claimed["attempt"] == 1
    assert isinstance(claimed["owner"], str) and ":" in claimed["owner"]
    step = events[3].data
    assert {"iteration", "input_tokens", "output_tokens", "cost_usd"} <= set(step)
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_a_failed_run_keeps_its_traceback_in_the_record_and_the_event(world) -> None:  # type: ignore[no-untyped-def]
    client, runtime, publisher = world
    # steps=0 is bad input: the demo agent raises, the run fails with a traceback.
    run_id = client.enqueue(agent="demo.counter", input={"steps": 0})
    runtime.handler().handle(list(publisher.messages[0]), {})
    record = client.status(run_id)
    assert record.status is RunStatus.FAILED and record.error is not None
    summary, _, traceback = record.error.partition("\n")
    assert summary.startswith("PayloadError: invalid input for demo.counter")
    assert traceback.startswith("Traceback (most recent call last):")
    failed = [e for e in client.events(run_id, follow=True, timeout_s=10) if e.event == "failed"]
    assert failed[0].data["error"] == summary
    assert failed[0].data["traceback"] == traceback


def test_a_recovered_run_says_why(world) -> None:  # type: ignore[no-untyped-def]
    client, runtime, publisher = world
    run_id = client.enqueue(agent="demo.counter", input={"steps": 2, "step_s": 0})
    store = runtime.store()
    claim = store.claim(run_id, owner="gone:1", lease_ttl_s=0.05, max_attempts=5, now=time.time())
    assert claim.epoch == 1
    time.sleep(0.1)  # the owner "died": its lease runs out
    assert runtime.recovery().sweep().requeued == 1
    # The sweep published to the broker; deliver the same message (nothing was checkpointed,
    # so the run starts over).
    runtime.handler().handle(list(publisher.messages[0]), {})
    names = [
        (e.event, e.data.get("attempt")) for e in client.events(run_id, follow=True, timeout_s=10)
    ]
    assert names[:4] == [("enqueued", None), ("claimed", 2), ("recovered", None), ("started", 2)]
    recovered = next(
        e for e in client.events(run_id, follow=True, timeout_s=10) if e.event == "recovered"
    )
    assert recovered.data == {"reason": "lease expired while running (worker lost)", "epoch": 2}


def test_cancelling_a_queued_run_is_an_event(world) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = world
    run_id = client.enqueue(agent="demo.counter", input={"steps": 2})
    client.cancel(run_id)
    assert [e.event for e in client.events(run_id, follow=True, timeout_s=10)] == [
        "enqueued",
        "cancelled",
    ]


def test_a_run_over_its_token_budget_fails_and_keeps_its_partial_transcript(world) -> None:  # type: ignore[no-untyped-def]
    client, runtime, publisher = world
    # demo.counter reports 10 + len(messages) input and 3 output tokens per step: 13, then 27.
    run_id = client.enqueue(
        agent="demo.counter",
        input={"steps": 5, "step_s": 0},
        metadata={"executus.max_tokens": "20"},
    )
    runtime.handler().handle(list(publisher.messages[0]), {})
    record = client.status(run_id)
    assert record.status is RunStatus.FAILED
    assert record.error == "budget_exceeded: run used 27 tokens of its 20"
    assert [m.content for m in client.transcript(run_id)] == ["step 1"]
    assert client.spend(run_id) == {
        "input_tokens": 21, "output_tokens": 6, "tokens": 27, "cost_usd": 0.0,
    }  # fmt: skip
    names = [e.event for e in client.events(run_id, follow=True, timeout_s=10)]
    assert names[-2:] == ["budget_stop", "failed"]


def test_a_bad_limit_in_a_request_is_refused_at_enqueue(world) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = world
    with pytest.raises(PayloadError, match=r"metadata\['executus.max_tokens'\] must be a number"):
        client.enqueue(agent="demo.counter", metadata={"executus.max_tokens": "lots"})


def test_a_run_first_seen_in_a_bad_message_says_why_in_its_stream(world) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = world
    handled = runtime.handler().handle(["bad-first", '{"agent": "demo.counter", "x": 1}'], {})
    assert handled.action == "failed"
    events = list(client.events("bad-first", follow=True, timeout_s=10))
    assert [e.event for e in events] == ["enqueued", "failed"]
    assert "x: Extra inputs are not permitted" in str(events[1].data["error"])
