"""The watchdog is driven by calling check(now) directly: no sleeping."""

from __future__ import annotations

import pytest
from pydantic import JsonValue

from executus_worker.core.models import RunInfo
from executus_worker.core.stop import CriticKilled, StopReason, StopToken
from executus_worker.critic import Escalation, TimeoutCritic, TimeoutPolicy


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, JsonValue]]] = []

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        self.events.append((event, data))


RUN = RunInfo(run_id="r1", agent="demo.counter")


def make(policy: TimeoutPolicy) -> tuple[TimeoutCritic, FakeClock, RecordingAudit]:
    clock, audit = FakeClock(), RecordingAudit()
    return TimeoutCritic(policy=policy, audit=audit, clock=clock), clock, audit


def test_idle_step_with_warn_policy_warns_once_and_does_not_stop() -> None:
    critic, clock, audit = make(TimeoutPolicy(idle_timeout_s=5, run_timeout_s=None))
    stop = StopToken()
    watch = critic.watch(RUN, {}, stop)
    watch.step_started(1)
    clock.t += 6
    critic.check()
    critic.check()
    assert not stop.requested()
    assert [e for e, _ in audit.events] == ["critic_warning"]
    assert watch.state()["idle_warnings"] == 1


def test_idle_step_with_stop_policy_requests_a_critic_stop() -> None:
    policy = TimeoutPolicy(idle_timeout_s=5, run_timeout_s=None, on_idle=Escalation.STOP)
    critic, clock, _ = make(policy)
    stop = StopToken()
    watch = critic.watch(RUN, {}, stop)
    watch.step_started(1)
    critic.check(clock.t + 4)
    assert not stop.requested()
    critic.check(clock.t + 6)
    assert stop.reason() is StopReason.CRITIC
    with pytest.raises(CriticKilled):
        stop.check()


def test_a_finished_step_is_not_idle() -> None:
    critic, clock, _ = make(TimeoutPolicy(idle_timeout_s=5, on_idle=Escalation.STOP))
    stop = StopToken()
    watch = critic.watch(RUN, {}, stop)
    watch.step_started(1)
    watch.step_finished(1)
    critic.check(clock.t + 60)
    assert not stop.requested()


def test_run_timeout_counts_active_time_of_earlier_attempts() -> None:
    critic, clock, audit = make(TimeoutPolicy(idle_timeout_s=None, run_timeout_s=100))
    stop = StopToken()
    watch = critic.watch(RUN, {"elapsed_s": 90.0}, stop)
    clock.t += 5
    critic.check()
    assert not stop.requested()
    assert watch.state()["elapsed_s"] == 95.0
    clock.t += 6
    critic.check()
    assert stop.reason() is StopReason.CRITIC
    assert audit.events[-1][0] == "critic_stop"


def test_closed_watches_are_forgotten() -> None:
    critic, clock, _ = make(TimeoutPolicy(idle_timeout_s=None, run_timeout_s=1))
    stop = StopToken()
    critic.watch(RUN, {}, stop).close()
    critic.check(clock.t + 10)
    assert not stop.requested()


def test_background_thread_starts_and_stops() -> None:
    critic = TimeoutCritic(tick_s=0.01)
    critic.start()
    critic.close()
    assert critic._thread is None
