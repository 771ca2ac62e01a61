from __future__ import annotations

from executus_worker.batteries.audit import MemoryAudit
from executus_worker.core.ports import NullCritic
from executus_worker.critic import Escalation, TimeoutCritic
from executus_worker.settings import Settings
from executus_worker.worker.runtime import build_critic


def test_no_timeouts_means_the_null_critic() -> None:
    assert isinstance(build_critic(Settings(), MemoryAudit()), NullCritic)


def test_configured_timeouts_build_a_started_watchdog() -> None:
    settings = Settings(critic_idle_timeout_s=5, critic_run_timeout_s=60, critic_on_idle="stop")
    critic = build_critic(settings, MemoryAudit())
    assert isinstance(critic, TimeoutCritic)
    try:
        assert critic.policy.idle_timeout_s == 5
        assert critic.policy.run_timeout_s == 60
        assert critic.policy.on_idle is Escalation.STOP
        assert critic._thread is not None and critic._thread.is_alive()
    finally:
        critic.close()
