"""The critic as the worker builds it from settings, and the prefork step interrupt."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest
from billiard.exceptions import SoftTimeLimitExceeded
from billiard.pool import soft_timeout_sighandler

from executus_worker.batteries.audit import MemoryAudit
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.demo_agents import CounterAgent
from executus_worker.core.models import RunInfo
from executus_worker.core.ports import NullCritic
from executus_worker.critic import ExtendOnce, KillOnStall, TimeoutCritic
from executus_worker.settings import Settings
from executus_worker.worker.interrupt import interrupt_step
from executus_worker.worker.wiring import build_critic


@pytest.fixture
def critic_from() -> Iterator[list[TimeoutCritic]]:
    built: list[TimeoutCritic] = []
    yield built
    for critic in built:
        critic.close()


def build(settings: Settings, built: list[TimeoutCritic], **kw: object) -> TimeoutCritic:
    critic = build_critic(settings, MemoryAudit(), **kw)  # type: ignore[arg-type]
    assert isinstance(critic, TimeoutCritic)
    built.append(critic)
    return critic


def test_switched_off_means_the_null_critic() -> None:
    assert isinstance(build_critic(Settings(critic_enabled=False), MemoryAudit()), NullCritic)


def test_settings_build_a_started_watchdog(critic_from: list[TimeoutCritic]) -> None:
    settings = Settings(
        critic_runtime_s=60, critic_backstop_mul=3, critic_extend_s=5, critic_nudge="wrap up"
    )
    critic = build(settings, critic_from)
    assert (critic.runtime_s, critic.backstop_mul) == (60, 3)
    assert critic.policy == ExtendOnce(extend_s=5, nudge="wrap up")
    assert critic.interrupt is interrupt_step
    assert critic._thread is not None and critic._thread.is_alive()


def test_policy_by_name_and_by_import_path(critic_from: list[TimeoutCritic]) -> None:
    assert isinstance(
        build(Settings(critic_policy="kill_on_stall"), critic_from).policy, KillOnStall
    )
    by_path = Settings(critic_policy="executus_worker.critic:KillOnStall")
    assert isinstance(build(by_path, critic_from).policy, KillOnStall)


def test_a_bad_policy_setting_is_reported_and_the_default_kept(
    critic_from: list[TimeoutCritic], caplog: pytest.LogCaptureFixture
) -> None:
    critic = build(Settings(critic_policy="no_such_module:policy"), critic_from)
    assert isinstance(critic.policy, ExtendOnce)
    assert "EXECUTUS_CRITIC_POLICY: cannot import no_such_module" in caplog.text


def test_backstop_mul_of_one_or_less_is_rejected() -> None:
    with pytest.raises(ValueError, match="critic_backstop_mul"):
        Settings(critic_backstop_mul=1)


def test_the_agents_own_runtime_budget_is_used(critic_from: list[TimeoutCritic]) -> None:
    class Timed(CounterAgent):
        runtime_s = 42

    registry = AgentRegistry()
    registry.register(Timed(), name="timed")
    critic = build(Settings(critic_runtime_s=600), critic_from, registry=registry)
    assert critic.budget_for(RunInfo(run_id="a", agent="timed")) == 42
    assert critic.budget_for(RunInfo(run_id="b", agent="unknown")) == 600


def test_interrupt_step_raises_soft_time_limit_in_a_blocked_main_thread() -> None:
    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)  # as in a prefork child
    main = threading.get_ident()
    sender = threading.Timer(0.2, lambda: interrupt_step(main))
    try:
        sender.start()
        with pytest.raises(SoftTimeLimitExceeded):
            time.sleep(30)  # a blocking call: the signal must break it, not wait it out
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)


def test_interrupt_step_refuses_other_threads_and_other_handlers() -> None:
    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    try:
        assert interrupt_step(main_thread_id() + 1) is False  # not the main thread
    finally:
        signal.signal(signal.SIGUSR1, previous)
    # Solo and the MainProcess: SIGUSR1 is Celery's, not billiard's soft limit.
    assert interrupt_step(main_thread_id()) is False


def main_thread_id() -> int:
    ident = threading.main_thread().ident
    assert ident is not None
    return ident
