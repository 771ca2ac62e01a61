"""Claims on receipt (worker/preclaim.py): the unacked record and the claim in one transaction,
taken by the handler, released when nobody took them. Real Redis, a real kombu channel."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.worker import state as worker_state
from kombu import Connection

from executus_worker.checkpoint import scripts
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import ClaimStatus
from executus_worker.core.models import RunRequest, RunStatus
from executus_worker.publish import TASK_RUN, build_envelope
from executus_worker.settings import Settings
from executus_worker.worker import preclaim, transport
from executus_worker.worker.preclaim import Preclaims
from executus_worker.worker.transport import SettledTags, Transport, server_address

pytestmark = pytest.mark.redis

PREFIX = "test-preclaim"
OWNER = "host:1:test"


@pytest.fixture
def world(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    client = redis.Redis.from_url(redis_url)
    client.script_load(scripts.WITH_LIB["claim"])  # as after any claim since Redis started
    store = RedisStore(client, key_prefix=PREFIX)
    address = server_address(client.connection_pool)
    assert address is not None
    claims = Preclaims(store, Settings(key_prefix=PREFIX), lambda: OWNER, address=address)
    monkeypatch.setattr(preclaim, "PRECLAIMS", claims)
    settled = SettledTags()
    settled.consuming()
    monkeypatch.setattr(transport, "SETTLED", settled)
    connection = Connection(redis_url, transport=Transport)
    channel = connection.channel()
    yield SimpleNamespace(client=client, store=store, claims=claims, channel=channel)
    channel.close()
    connection.release()
    client.close()


def _registered(store: RedisStore) -> str:
    run_id = f"pc-{uuid.uuid4().hex[:10]}"
    request = RunRequest(run_id=run_id, agent="demo.counter", input={"steps": 1})
    store.register(request, run_id=run_id, queue="executus", now=time.time())
    return run_id


def _message(channel: Any, run_id: str, **headers: Any) -> Any:
    raw = json.loads(build_envelope(TASK_RUN, [run_id, "{}"], queue="executus"))
    raw["headers"].update(headers)
    raw["properties"]["delivery_info"] = {"exchange": "executus", "routing_key": "executus"}
    return channel.message_to_python(raw)


def test_the_claim_rides_with_the_unacked_record_and_goes_to_the_task(
    world: SimpleNamespace,
) -> None:
    store, claims, channel, client = (
        world.store,
        world.claims,
        world.channel,
        world.client,
    )
    run_id = _registered(store)
    message = _message(channel, run_id)
    tag = message.delivery_tag
    channel.qos.append(message, tag)

    assert client.hexists("unacked", tag)  # kombu's record, as kombu writes it
    record = store.get(run_id)
    assert record is not None and record.status is RunStatus.RUNNING and record.owner == OWNER
    claim = claims.forward(tag)  # handed to the pool with the message
    assert claim is not None and claims.forward(tag) is None
    assert claim is not None and (claim.run_id, claim.owner) == (run_id, OWNER)
    assert claim.result.status is ClaimStatus.CLAIMED
    assert claim.result.fence is not None and claim.result.fence.epoch == 1
    channel.qos.ack(tag)  # forwarded: the ack releases nothing
    assert store.get(run_id).status is RunStatus.RUNNING  # type: ignore[union-attr]
    assert not client.hexists("unacked", tag)


def test_the_task_takes_its_claim_once_and_releases_one_it_did_not_take(
    world: SimpleNamespace,
) -> None:
    store, claims, channel = world.store, world.claims, world.channel
    taken_run, left_run = _registered(store), _registered(store)
    forwarded = {}
    for run_id in (taken_run, left_run):
        message = _message(channel, run_id)
        channel.qos.append(message, message.delivery_tag)
        forwarded[run_id] = claims.forward(message.delivery_tag)

    with preclaim.delivering(lambda: store, forwarded[taken_run]):
        assert preclaim.take(left_run, OWNER) is None  # only the run its message named
        assert preclaim.take(taken_run, "another owner") is None  # and only its owner
        claim = preclaim.take(taken_run, OWNER)
        assert claim is not None and claim.result.status is ClaimStatus.CLAIMED
        assert preclaim.take(taken_run, OWNER) is None  # once
    assert preclaim.take(taken_run, OWNER) is None  # only inside its task
    assert store.get(taken_run).status is RunStatus.RUNNING  # type: ignore[union-attr]

    with preclaim.delivering(lambda: store, forwarded[left_run]):
        pass  # the handler never took it (it could not be built, say)
    record = store.get(left_run)
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert record.last_reason == preclaim.RELEASE_REASON


def test_a_task_without_a_forwarded_claim_claims_as_before(world: SimpleNamespace) -> None:
    for forwarded in (None, "junk", ["a", "list"]):
        with preclaim.delivering(lambda: world.store, forwarded):
            assert preclaim.take("any-run", OWNER) is None


def test_a_claim_nobody_took_is_released_at_the_ack(world: SimpleNamespace) -> None:
    store, channel = world.store, world.channel
    run_id = _registered(store)
    message = _message(channel, run_id)
    channel.qos.append(message, message.delivery_tag)
    channel.qos.ack(message.delivery_tag)
    record = store.get(run_id)
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert record.last_reason == preclaim.RELEASE_REASON
    # Not a crash: the next claim is attempt 2 with no failure counted against the run.
    again = store.claim(run_id, owner=OWNER, lease_ttl_s=30, max_attempts=1, now=time.time())
    assert again.status is ClaimStatus.CLAIMED


def test_a_busy_run_is_a_duplicate_on_receipt_too(world: SimpleNamespace) -> None:
    store, claims, channel = world.store, world.claims, world.channel
    run_id = _registered(store)
    held = store.claim(run_id, owner="other", lease_ttl_s=30, max_attempts=5, now=time.time())
    assert held.status is ClaimStatus.CLAIMED
    message = _message(channel, run_id)
    channel.qos.append(message, message.delivery_tag)
    taken = claims.forward(message.delivery_tag)
    assert taken is not None and taken.result.status is ClaimStatus.BUSY
    channel.qos.ack(message.delivery_tag)
    assert store.get(run_id).owner == "other"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "headers",
    [{"eta": "2030-01-01T00:00:00"}, {"expires": "2030-01-01T00:00:00"}, {"task": "other.task"}],
    ids=["eta", "expires", "another-task"],
)
def test_messages_that_may_not_run_at_once_are_claimed_in_the_task(
    world: SimpleNamespace, headers: dict[str, str]
) -> None:
    store, claims, channel, client = (
        world.store,
        world.claims,
        world.channel,
        world.client,
    )
    run_id = _registered(store)
    message = _message(channel, run_id, **headers)
    assert claims.plan(message) is None
    channel.qos.append(message, message.delivery_tag)
    assert client.hexists("unacked", message.delivery_tag)  # kombu's own append
    assert store.get(run_id).status is RunStatus.QUEUED  # type: ignore[union-attr]
    channel.qos.ack(message.delivery_tag)


def test_a_revoked_message_is_not_claimed(world: SimpleNamespace) -> None:
    store, claims, channel = world.store, world.claims, world.channel
    message = _message(channel, _registered(store))
    worker_state.revoked.add(message.headers["id"])
    try:
        assert claims.plan(message) is None
    finally:
        worker_state.revoked.discard(message.headers["id"])


def test_an_unknown_run_is_gone_on_receipt_and_claimed_again_after_registering(
    world: SimpleNamespace,
) -> None:
    claims, channel = world.claims, world.channel
    run_id = f"pc-unknown-{uuid.uuid4().hex[:6]}"
    message = _message(channel, run_id)
    channel.qos.append(message, message.delivery_tag)
    taken = claims.forward(message.delivery_tag)
    assert taken is not None and taken.result.status is ClaimStatus.GONE
    channel.qos.ack(message.delivery_tag)


def test_after_a_script_flush_the_task_claims_as_before(world: SimpleNamespace) -> None:
    """A restarted Redis has no scripts: the claim on receipt fails and is dropped, kombu's
    record is written all the same, and the task's own claim loads the script again."""
    store, claims, channel, client = (
        world.store,
        world.claims,
        world.channel,
        world.client,
    )
    client.script_flush()
    run_id = _registered(store)
    message = _message(channel, run_id)
    channel.qos.append(message, message.delivery_tag)
    assert client.hexists("unacked", message.delivery_tag)
    assert claims.forward(message.delivery_tag) is None
    assert store.get(run_id).status is RunStatus.QUEUED  # type: ignore[union-attr]
    claimed = store.claim(run_id, owner=OWNER, lease_ttl_s=30, max_attempts=5, now=time.time())
    assert claimed.status is ClaimStatus.CLAIMED
    channel.qos.ack(message.delivery_tag)
