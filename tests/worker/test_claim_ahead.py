"""Claims sent ahead (worker/preclaim.py ``Ahead``): the executing process sends its CLAIM as
the task starts and the handler reads the reply when it claims. Real Redis, the real task
called in-process, so the same Runtime, handler and store as in a worker's pool process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.exceptions import Ignore

from executus_worker.checkpoint import scripts
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import ClaimResult, ClaimStatus
from executus_worker.core.models import RunRequest, RunStatus
from executus_worker.core.stop import StopToken
from executus_worker.errors import StoreError
from executus_worker.publish import TASK_RUN
from executus_worker.settings import Settings
from executus_worker.worker import preclaim
from executus_worker.worker.factory import create_app
from executus_worker.worker.identity import process_owner
from executus_worker.worker.runtime import Runtime

pytestmark = pytest.mark.redis


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return Settings(redis_url=redis_url, key_prefix=f"ta{uuid.uuid4().hex[:8]}")


@pytest.fixture
def store(redis_url: str, settings: Settings) -> Iterator[RedisStore]:
    client = redis.Redis.from_url(redis_url)
    client.script_load(scripts.WITH_LIB["claim"])  # as after any claim since Redis started
    yield RedisStore(client, key_prefix=settings.key_prefix)
    client.close()


def _registered(store: RedisStore, steps: int = 1) -> tuple[str, str]:
    run_id = f"ta-{uuid.uuid4().hex[:10]}"
    request = RunRequest(run_id=run_id, agent="demo.counter", input={"steps": steps})
    store.register(request, run_id=run_id, queue="executus", now=time.time())
    return run_id, request.to_json()


class _Claims:
    """Counts the claims made the ordinary way (``RedisStore.claim``): one sent ahead is not."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = RedisStore.claim

        def counted(store: RedisStore, *args: Any, **kwargs: Any) -> ClaimResult:
            self.count += 1
            return real(store, *args, **kwargs)

        monkeypatch.setattr(RedisStore, "claim", counted)


def test_the_task_claims_once_with_the_claim_it_sent_ahead(
    settings: Settings, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = _Claims(monkeypatch)
    sent = []
    real_send = preclaim.send_ahead

    def watched(*args: Any, **kwargs: Any) -> preclaim.Ahead | None:
        ahead = real_send(*args, **kwargs)
        sent.append(ahead)
        return ahead

    monkeypatch.setattr(preclaim, "send_ahead", watched)
    app = create_app(settings)
    run_id, request = _registered(store, steps=2)
    assert app.tasks[TASK_RUN](run_id, request) == {"run_id": run_id, "status": "completed"}
    assert len(sent) == 1 and isinstance(sent[0], preclaim.Ahead)
    assert claims.count == 0, "the handler took the claim sent ahead"
    record = store.get(run_id)
    assert record is not None and record.status is RunStatus.COMPLETED
    assert record.attempts == 1 and record.epoch == 1


def test_a_claim_sent_ahead_that_nobody_took_is_released(
    settings: Settings, store: RedisStore
) -> None:
    runtime = Runtime(settings, drain=StopToken())
    run_id, request = _registered(store)
    ahead = runtime.claim_ahead([run_id, request], {})
    assert isinstance(ahead, preclaim.Ahead)
    with preclaim.delivering(runtime.store, ahead):
        assert preclaim.take("another-run", process_owner()) is None
    record = store.get(run_id)
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert record.last_reason == preclaim.RELEASE_REASON
    # Not a crash: a later claim succeeds even when no further attempt is allowed.
    again = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=1, now=time.time())
    assert again.status is ClaimStatus.CLAIMED


def test_a_busy_run_sent_ahead_is_a_duplicate(
    settings: Settings, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = _Claims(monkeypatch)
    run_id, request = _registered(store)
    held = store.claim(run_id, owner="other", lease_ttl_s=30, max_attempts=5, now=time.time())
    assert held.status is ClaimStatus.CLAIMED
    app = create_app(settings)
    with pytest.raises(Ignore, match="duplicate delivery"):  # how Celery hears of a duplicate
        app.tasks[TASK_RUN](run_id, request)
    assert claims.count == 1, "only the test's own claim"
    record = store.get(run_id)
    assert record is not None and record.owner == "other" and record.attempts == 1


def test_after_a_script_flush_the_handler_claims_as_before(
    settings: Settings, store: RedisStore, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restarted Redis has no scripts: the claim sent ahead meets NOSCRIPT, changes nothing,
    and the handler's own claim loads the script and runs the run."""
    app = create_app(settings)
    run_id, request = _registered(store)
    redis.Redis.from_url(redis_url).script_flush()
    claims = _Claims(monkeypatch)
    assert app.tasks[TASK_RUN](run_id, request) == {"run_id": run_id, "status": "completed"}
    assert claims.count == 1
    record = store.get(run_id)
    assert record is not None and record.status is RunStatus.COMPLETED and record.attempts == 1


def test_an_unknown_run_is_registered_and_claimed_again(
    settings: Settings, store: RedisStore
) -> None:
    """A raw send_task of a run nobody registered: the claim sent ahead finds nothing (GONE),
    the handler registers the run from its message and claims it."""
    app = create_app(settings)
    run_id = f"ta-raw-{uuid.uuid4().hex[:6]}"
    request = RunRequest(run_id=run_id, agent="demo.counter", input={"steps": 1}).to_json()
    assert app.tasks[TASK_RUN](run_id, request) == {"run_id": run_id, "status": "completed"}
    record = store.get(run_id)
    assert record is not None and record.attempts == 1


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [([], {}), (["not a valid id!"], {}), ([{"agent": "demo.counter"}], {}), ([7, "{}"], {})],
    ids=["nothing", "invalid-id", "lone-request", "number"],
)
def test_no_claim_is_sent_ahead_without_a_valid_run_id_in_the_arguments(
    settings: Settings, args: list[Any], kwargs: dict[str, Any]
) -> None:
    runtime = Runtime(settings, drain=StopToken())
    ahead = runtime.claim_ahead(args, kwargs)
    assert ahead is None or ahead.run_id == "7"  # a number is read as its text, as the handler
    if ahead is not None:
        with preclaim.delivering(runtime.store, ahead):
            pass  # released (a GONE claim: nothing to release)


def test_a_store_that_cannot_send_ahead_leaves_the_claim_to_the_handler(
    settings: Settings, store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the client has no single pool (a cluster), ``send_claim`` is None; a send that
    fails is the same: the handler claims as usual."""
    monkeypatch.setattr(RedisStore, "send_claim", lambda self, call: None)
    claims = _Claims(monkeypatch)
    app = create_app(settings)
    run_id, request = _registered(store)
    assert app.tasks[TASK_RUN](run_id, request) == {"run_id": run_id, "status": "completed"}
    assert claims.count == 1

    def broken(self: RedisStore, call: Any) -> None:
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(RedisStore, "send_claim", broken)
    run_id, request = _registered(store)
    assert app.tasks[TASK_RUN](run_id, request) == {"run_id": run_id, "status": "completed"}
    assert claims.count == 2


def test_a_claim_whose_reply_times_out_is_a_store_outage_and_never_misread(
    redis_url: str, settings: Settings, store: RedisStore
) -> None:
    """Redis holds the command (CLIENT PAUSE) past the socket timeout: reading the claim
    raises StoreError, as the handler's own claim would (the task retries); an untaken one is
    only logged. The late replies are never read as another command's."""
    client = redis.Redis.from_url(redis_url, socket_timeout=0.2, retry=None)
    slow = RedisStore(client, key_prefix=settings.key_prefix)
    admin = redis.Redis.from_url(redis_url)
    try:
        taken_run, _ = _registered(store)
        left_run, _ = _registered(store)
        warm = slow.claim("ta-warm", owner="w", lease_ttl_s=30, max_attempts=5, now=time.time())
        assert warm.status is ClaimStatus.GONE  # the kept connection exists before the pause
        admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        taken = preclaim.send_ahead(slow, settings, taken_run, "me")
        assert taken is not None
        with preclaim.delivering(lambda: slow, taken), pytest.raises(StoreError):
            preclaim.take(taken_run, "me")
        left = preclaim.send_ahead(slow, settings, left_run, "me")
        with preclaim.delivering(lambda: slow, left):
            pass  # not taken: reading it times out, which is logged, not raised
        time.sleep(1.6)  # the pause is over
        for run_id in (taken_run, left_run):
            # Applied, or dropped with the closed connection; either way never a lost update.
            record = store.get(run_id)
            assert record is not None and record.status in {RunStatus.QUEUED, RunStatus.RUNNING}
        fresh, _ = _registered(store)
        after = slow.claim(fresh, owner="me", lease_ttl_s=30, max_attempts=5, now=time.time())
        assert after.status is ClaimStatus.CLAIMED  # its own reply, not a late one
        assert after.record is not None and after.record.run_id == fresh
    finally:
        client.close()
        admin.close()
