"""The critic: a per-run two-tier runtime watchdog with an escalation policy."""

from executus_worker.critic.policy import (
    Decision,
    EscalationPolicy,
    ExtendBy,
    ExtendOnce,
    Kill,
    KillOnStall,
    Nudge,
    Stall,
)
from executus_worker.critic.watchdog import TimeoutCritic

__all__ = [
    "Decision",
    "EscalationPolicy",
    "ExtendBy",
    "ExtendOnce",
    "Kill",
    "KillOnStall",
    "Nudge",
    "Stall",
    "TimeoutCritic",
]
