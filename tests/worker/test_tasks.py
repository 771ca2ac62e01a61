"""The Celery tasks called in-process against the private Redis (no worker process)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRequest, RunStatus
from executus_worker.publish import TASK_RECOVER, TASK_RUN
from executus_worker.settings import Settings
from executus_worker.worker.factory import create_app
from executus_worker.worker.reporting import RunFailed
from executus_worker.worker.runtime import Runtime

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_the_run_task_executes_a_registered_run(redis_url: str, prefix: str) -> None:
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix))
    store = RedisStore(redis.Redis.from_url(redis_url), key_prefix=prefix)
    request = RunRequest(run_id="t1", agent="demo.counter", input={"steps": 2})
    store.register(request, run_id="t1", queue="executus", now=time.time())
    result = app.tasks[TASK_RUN]("t1", request.to_json())
    # No result backend: a summary, never the output (it would reach logs and events).
    assert result == {"run_id": "t1", "status": "completed"}
    record = store.get("t1")
    assert record is not None and record.status is RunStatus.COMPLETED
    # A late duplicate reports the stored ending and runs nothing.
    assert app.tasks[TASK_RUN]("t1", request.to_json()) == result
    again = store.get("t1")
    assert again is not None and again.epoch == record.epoch == 1


def test_with_a_result_backend_the_run_task_returns_the_output(redis_url: str, prefix: str) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=prefix, result_backend=redis_url)
    app = create_app(settings)
    assert app.tasks[TASK_RUN].ignore_result is False
    request = RunRequest(run_id="t2", agent="demo.counter", input={"steps": 2})
    assert app.tasks[TASK_RUN]("t2", request.to_json()) == "done 2"


def test_the_recover_task_sweeps_and_republishes(redis_url: str, prefix: str) -> None:
    queue = f"{prefix}-q"
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix, default_queue=queue))
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, key_prefix=prefix)
    now = time.time()
    store.register(RunRequest(agent="demo.counter"), run_id="i1", queue=queue, now=now)
    claim = store.claim("i1", owner="w:1", lease_ttl_s=30, max_attempts=5, now=now)
    store.interrupt("i1", fence=claim.fence, now=now)
    report = app.tasks[TASK_RECOVER]()
    assert report["requeued"] == 1 and report["published"] == 1
    assert client.llen(queue) == 1
    client.delete(queue)


def test_a_task_whose_handler_cannot_be_built_still_records_the_run(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Runtime, store: RedisStore) -> None:
        raise RuntimeError("cannot start the critic thread")

    monkeypatch.setattr(Runtime, "_build_handler", broken)
    app = create_app(Settings(redis_url=redis_url, key_prefix=prefix))
    store = RedisStore(redis.Redis.from_url(redis_url), key_prefix=prefix)
    request = RunRequest(run_id="t2", agent="demo.counter")
    store.register(request, run_id="t2", queue="executus", now=time.time())
    # Celery sees a FAILURE with the reason; the record says the same.
    with pytest.raises(RunFailed, match="could not handle this run"):
        app.tasks[TASK_RUN]("t2", request.to_json())
    record = store.get("t2")
    assert record is not None and record.status is RunStatus.FAILED and record.attempts == 1
    assert record.error == (
        "the worker could not handle this run: RuntimeError: cannot start the critic thread"
    )
