"""Celery's own tools tell the truth about runs: result states, task events, revoke, inspect.

Real workers; the sender side is a plain Celery app (``send_task``, ``AsyncResult``,
``app.control``, an event receiver) or the ``celery`` CLI -- what Flower and other services use.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from executus_worker.core.models import RunLimits, RunRequest, RunStatus
from executus_worker.publish import TASK_RUN
from executus_worker.settings import Settings
from executus_worker.worker import create_app

from .harness import CELERY, Cluster, counter_transcript, wait_for

pytestmark = pytest.mark.e2e

SECRET = "4111-1111-1111-1111"


def sender(cluster: Cluster, *, results: bool) -> Celery:
    settings = Settings(
        redis_url=cluster.redis_url,
        key_prefix=cluster.prefix,
        default_queue=cluster.queue,
        result_backend=cluster.redis_url if results else None,
    )
    return create_app(settings)


def send(app: Celery, cluster: Cluster, request: RunRequest) -> Any:
    """A raw send_task, as another Python service would (task id = run id, as documented)."""
    assert request.run_id is not None
    return app.send_task(
        TASK_RUN, args=[request.run_id, request.to_json()], queue=cluster.queue,
        task_id=request.run_id,
    )  # fmt: skip


def counter(steps: int, step_s: float, **limits: int) -> RunRequest:
    return RunRequest(
        run_id=f"run-{uuid.uuid4().hex[:8]}",
        agent="e2e.counter",
        input={"steps": steps, "step_s": step_s},
        metadata={"note": SECRET},  # user content that no Celery tool may show
        limits=RunLimits(**limits),
    )


def test_a_sender_with_a_result_backend_sees_each_ending(cluster: Cluster) -> None:
    app = sender(cluster, results=True)
    cluster.settings["EXECUTUS_RESULT_BACKEND"] = cluster.redis_url
    try:
        a = cluster.start("threads")
        done = send(app, cluster, counter(3, 0.05))
        assert done.get(timeout=60) == "done 3"
        assert done.state == "SUCCESS"

        failed = send(app, cluster, counter(5, 0.05, max_iterations=2))
        failed.get(timeout=60, propagate=False)
        assert failed.state == "FAILURE"
        assert "max_iterations=2" in str(failed.result)

        long = counter(40, 0.2)
        cancelled = send(app, cluster, long)
        assert long.run_id is not None
        cluster.wait_steps_ended(long.run_id, 2)
        cluster_client_cancel(cluster, long.run_id)
        wait_for("REVOKED", lambda: cancelled.state == "REVOKED", 30)
        assert cluster.record(long.run_id).status is RunStatus.CANCELLED

        resumed_request = counter(10, 0.3)
        resumed = send(app, cluster, resumed_request)
        assert resumed_request.run_id is not None
        cluster.wait_steps_ended(resumed_request.run_id, 2)
        a.signal(signal.SIGTERM)
        a.wait_exit(timeout_s=20)
        assert cluster.record(resumed_request.run_id).status is RunStatus.INTERRUPTED
        # Interrupted is not success: the sender sees RETRY until the run ends elsewhere.
        assert resumed.state == "RETRY"
        cluster.start("threads")
        assert resumed.get(timeout=60) == "done 10"
        assert cluster.transcript(resumed_request.run_id) == counter_transcript(10)
    finally:
        app.close()


def cluster_client_cancel(cluster: Cluster, run_id: str) -> None:
    """What `executus-worker cancel` and Client.cancel do: the store's cancel request."""
    cluster.store.request_cancel(run_id, now=time.time())


class Events:
    """Task events as Flower receives them."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []
        self._receiver: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def __enter__(self) -> Events:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._receiver.should_stop = True  # checked at least every second
        self._thread.join(10)

    def _capture(self) -> None:
        ready = self._ready

        class Receiver(self.app.events.Receiver):  # type: ignore[name-defined,misc]
            def on_consume_ready(self, *args: Any, **kwargs: Any) -> None:
                super().on_consume_ready(*args, **kwargs)
                ready.set()  # subscribed: no event sent from now on is missed

        with self.app.connection_for_read() as conn:
            self._receiver = Receiver(conn, handlers={"*": self.seen.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def of(self, task_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e for e in list(self.seen)
            if e.get("uuid") == task_id and (kind is None or e["type"] == kind)
        ]  # fmt: skip

    def wait(self, task_id: str, kind: str, timeout_s: float = 60) -> dict[str, Any]:
        found: list[dict[str, Any]] = wait_for(
            f"{kind} of {task_id}", lambda: self.of(task_id, kind), timeout_s
        )
        return found[0]


def test_task_events_and_inspect_show_each_ending_and_no_input(cluster: Cluster) -> None:
    """Without a result backend (the default), what Flower sees: task-succeeded, task-failed,
    task-revoked, task-retried -- and the run id and agent, never the input."""
    app = sender(cluster, results=False)
    try:
        a = cluster.start("threads", args=["-E"])
        with Events(app) as events:
            ok = counter(3, 0.05)
            send(app, cluster, ok)
            assert ok.run_id is not None
            succeeded = events.wait(ok.run_id, "task-succeeded")
            assert SECRET not in json.dumps(succeeded)
            received = events.wait(ok.run_id, "task-received")
            assert received["args"] == f"['{ok.run_id}', {{'agent': 'e2e.counter'}}]"

            bad = counter(5, 0.05, max_iterations=2)
            send(app, cluster, bad)
            assert bad.run_id is not None
            assert "max_iterations=2" in events.wait(bad.run_id, "task-failed")["exception"]
            assert events.of(bad.run_id, "task-succeeded") == []

            long = counter(40, 0.2)
            send(app, cluster, long)
            assert long.run_id is not None
            cluster.wait_steps_ended(long.run_id, 2)
            active = _inspect_active(cluster, a.hostname())
            assert SECRET not in json.dumps(active)
            shown = [t for t in active if t["id"] == long.run_id]
            assert shown and shown[0]["args"] == [long.run_id, {"agent": "e2e.counter"}]
            cluster_client_cancel(cluster, long.run_id)
            events.wait(long.run_id, "task-revoked")
            assert events.of(long.run_id, "task-succeeded") == []

            paused = counter(10, 0.3)
            send(app, cluster, paused)
            assert paused.run_id is not None
            cluster.wait_steps_ended(paused.run_id, 2)
            a.signal(signal.SIGTERM)
            a.wait_exit(timeout_s=20)
            events.wait(paused.run_id, "task-retried")
            assert events.of(paused.run_id, "task-succeeded") == []
    finally:
        app.close()


def _inspect_active(cluster: Cluster, hostname: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [CELERY, "-A", "executus_worker.worker", "inspect", "active", "-d", hostname, "-j",
         "-t", "10"],
        env=cluster.env(), capture_output=True, text=True, timeout=90, check=True,
    )  # fmt: skip
    replies: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return replies[hostname]


@pytest.fixture
def control(cluster: Cluster) -> Iterator[Celery]:
    app = sender(cluster, results=False)
    yield app
    app.close()


def _celery_revoke(cluster: Cluster, *args: str) -> str:
    done = subprocess.run(
        [CELERY, "-A", "executus_worker.worker", "control", "revoke", *args],
        env=cluster.env(), capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_revoke_cancels_queued_and_running_runs_for_good(cluster: Cluster, control: Celery) -> None:
    cluster.settings.update(EXECUTUS_QUEUED_TIMEOUT_S="1")  # a queued run is re-published fast
    cluster.start("threads", concurrency=1)
    busy = cluster.submit("e2e.counter", steps=45, step_s=0.4)  # outlasts the CLI's start
    waiting = cluster.submit("e2e.counter", steps=3, step_s=0.05)
    cluster.wait_steps_ended(busy, 2)

    # `celery control revoke` of a run still in the broker: cancelled at once, durably.
    reply = _celery_revoke(cluster, waiting)
    assert f"runs cancelled: {waiting}" in reply, reply
    assert cluster.record(waiting).status is RunStatus.CANCELLED

    # Revoke (no terminate) of the running one: it stops at its next step boundary.
    control.control.revoke(busy)
    record = cluster.wait_status(busy, RunStatus.CANCELLED, timeout_s=30)
    assert len(cluster.ended(busy)) < 45

    # Sweeps run every 0.5 s and re-publish queued runs after 1 s: nothing comes back.
    time.sleep(5)
    assert cluster.record(busy).status is RunStatus.CANCELLED
    assert cluster.record(waiting).status is RunStatus.CANCELLED
    assert cluster.steps(waiting) == []
    assert cluster.record(busy).finished_at == record.finished_at


def test_revoke_with_terminate_kills_the_step_and_the_run_stays_cancelled(
    cluster: Cluster, control: Celery
) -> None:
    cluster.start("prefork")
    run_id = cluster.submit("e2e.counter", steps=20, step_s=0.5)
    cluster.wait_steps_ended(run_id, 2)
    control.control.revoke(run_id, terminate=True)
    # The child is killed mid-step; the claim after its lease (2 s) finds the cancel.
    cluster.wait_status(run_id, RunStatus.CANCELLED, timeout_s=60)
    ended = len(cluster.ended(run_id))
    time.sleep(5)  # ten sweeps later
    assert cluster.record(run_id).status is RunStatus.CANCELLED
    assert len(cluster.ended(run_id)) == ended < 20
