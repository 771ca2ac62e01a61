"""Metrics hooks fed by real runs: the run handler in-process on the private Redis."""

from __future__ import annotations

import uuid

import pytest

from executus_worker.checkpoint.handle import StoreCheckpointerFactory
from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.core.models import (
    Checkpoint,
    OutcomeKind,
    RunInfo,
    RunOutcome,
    RunRequest,
    RunStatus,
)
from executus_worker.core.ports import Agent, Deps
from executus_worker.core.stop import StopToken
from executus_worker.observability.instruments import (
    TimedCheckpoints,
    observe_delivery,
    observed_execute,
)
from executus_worker.observability.metrics import NullMetrics
from executus_worker.observability.prometheus import PrometheusMetrics
from executus_worker.settings import Settings
from executus_worker.worker.recovery import Recovery
from executus_worker.worker.runs import Handled
from executus_worker.worker.runtime import Runtime


def value(m: PrometheusMetrics, name: str, **labels: str) -> float:
    found = m.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@pytest.fixture
def metrics() -> PrometheusMetrics:
    return PrometheusMetrics()


@pytest.fixture
def runtime(redis_url: str, metrics: PrometheusMetrics) -> Runtime:
    settings = Settings(redis_url=redis_url, key_prefix=f"obs{uuid.uuid4().hex[:8]}")
    return Runtime(settings, drain=StopToken(), metrics=lambda: metrics)


def enqueue(runtime: Runtime, steps: int, agent: str = "demo.counter") -> list[str]:
    run_id = f"r-{uuid.uuid4().hex[:8]}"
    request = RunRequest(run_id=run_id, agent=agent, input={"steps": steps})
    runtime.store().register(request, run_id=run_id, queue="executus", now=0)
    return [run_id, request.to_json()]


@pytest.mark.redis
def test_a_completed_run_counts_its_steps_saves_attempt_and_status(runtime, metrics) -> None:
    handled = runtime.handle(enqueue(runtime, 4), {}, task_id=None)
    assert (handled.action, handled.outcome) == ("executed", OutcomeKind.COMPLETED)
    assert value(metrics, "executus_runs_total", status="completed") == 1
    assert value(metrics, "executus_run_attempts_total", agent="demo.counter") == 1
    assert value(metrics, "executus_step_duration_seconds_count", agent="demo.counter") == 4
    # Three per-step saves (the finishing step is written by complete()), one finish.
    assert value(metrics, "executus_checkpoint_save_seconds_count", op="save") == 3
    assert value(metrics, "executus_checkpoint_save_seconds_count", op="finish") == 1
    assert value(metrics, "executus_active_runs") == 0
    assert value(metrics, "executus_deliveries_total", action="executed") == 1


@pytest.mark.redis
def test_a_second_delivery_of_a_finished_run_is_a_dropped_duplicate(runtime, metrics) -> None:
    message = enqueue(runtime, 1)
    runtime.handle(message, {}, task_id=None)
    again = runtime.handle(message, {}, task_id=None)
    assert again.action == "duplicate"
    assert value(metrics, "executus_duplicate_deliveries_dropped_total") == 1
    assert value(metrics, "executus_runs_total", status="completed") == 1


@pytest.mark.redis
def test_a_run_of_an_unknown_agent_counts_as_failed_without_an_attempt(runtime, metrics) -> None:
    handled = runtime.handle(enqueue(runtime, 1, agent="no.such"), {}, task_id=None)
    assert handled.action == "failed"
    assert value(metrics, "executus_runs_total", status="failed") == 1
    assert value(metrics, "executus_run_attempts_total", agent="no.such") == 0


def test_the_active_gauge_counts_a_run_only_while_it_executes(metrics) -> None:
    seen: list[float] = []

    def execute(agent: Agent, info: RunInfo, deps: Deps, stop: StopToken) -> RunOutcome:
        seen.append(value(metrics, "executus_active_runs"))
        return RunOutcome(kind=OutcomeKind.LOST, run_id=info.run_id, error="fenced")

    agent = type("A", (), {"name": "x"})()
    info = RunInfo.from_request(RunRequest(agent="x"), run_id="r", epoch=2, attempt=2)
    outcome = observed_execute(execute, metrics)(agent, info, Deps(), StopToken())
    assert outcome.kind is OutcomeKind.LOST
    assert seen == [1] and value(metrics, "executus_active_runs") == 0
    assert value(metrics, "executus_lease_losses_total") == 1


def test_a_failing_metrics_hook_never_fails_the_delivery() -> None:
    class Broken(NullMetrics):
        def delivery(self, action: str) -> None:
            raise RuntimeError("registry on fire")

    observe_delivery(Handled("executed", "r", OutcomeKind.COMPLETED), Broken())


def test_a_throttled_save_is_not_timed(metrics) -> None:
    store = MemoryStore()
    request = RunRequest(run_id="r", agent="demo.counter")
    store.register(request, run_id="r", queue="q", now=0)
    claim = store.claim("r", owner="w", lease_ttl_s=30, max_attempts=5, now=0)
    inner = StoreCheckpointerFactory(store, throttle_ms=60_000)
    info = RunInfo.from_request(
        request, run_id="r", epoch=claim.epoch, attempt=1, fence=claim.fence.token
    )
    handle = TimedCheckpoints(inner, metrics).begin(info, StopToken())
    assert handle is not None
    checkpoint = Checkpoint(run_id="r", epoch=claim.epoch, iteration=0, messages=[])
    assert handle.save(checkpoint) is True
    assert handle.save(checkpoint) is False  # inside the throttle window: nothing written
    assert value(metrics, "executus_checkpoint_save_seconds_count", op="save") == 1


def test_recoveries_are_counted_by_reason(metrics) -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])  # lease expiry follows the store's clock
    for run_id in ("a", "b"):
        store.register(RunRequest(run_id=run_id, agent="demo.counter"), run_id=run_id,
                       queue="q", now=0)  # fmt: skip
        claim = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=0)
        if run_id == "a":
            store.interrupt(run_id, fence=claim.fence, now=0)

    class Sink:
        def publish_many(self, messages: object) -> int:
            return len(list(messages))  # type: ignore[call-overload]

    now[0] = 100.0  # "b"'s 30 s lease has expired: its owner is gone
    Recovery(store, Sink(), queued_timeout_s=900, metrics=metrics, clock=lambda: now[0]).sweep()
    assert value(metrics, "executus_recoveries_total", reason="interrupted") == 1
    assert value(metrics, "executus_recoveries_total", reason="lease_expired") == 1
    assert store.get("a").status is RunStatus.QUEUED  # type: ignore[union-attr]
