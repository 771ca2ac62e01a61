"""The critic: a per-run two-tier timeout watchdog with an escalation policy."""

from executus_worker.critic.watchdog import Escalation, TimeoutCritic, TimeoutPolicy

__all__ = ["Escalation", "TimeoutCritic", "TimeoutPolicy"]
