"""Build the critic and the batteries from Settings; each one optional, null when unset.

Kept apart from ``runtime.py`` (which owns processes, clients and caching) so that what a
setting turns on is readable in one place.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis

from executus_worker.batteries.audit import FanoutAudit, LoggingAudit, StreamAudit
from executus_worker.batteries.budget import BudgetLimits, LedgerBudget
from executus_worker.checkpoint.events import RedisEventLog
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.spend import RedisSpendLedger
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.models import RunInfo
from executus_worker.core.ports import (
    Audit,
    Budget,
    Critic,
    NullAudit,
    NullBudget,
    NullCritic,
    NullPersona,
    NullSkills,
    Persona,
    Skills,
)
from executus_worker.critic import EscalationPolicy, ExtendOnce, KillOnStall, TimeoutCritic
from executus_worker.errors import ConfigError
from executus_worker.settings import Settings
from executus_worker.worker.interrupt import interrupt_step

log = logging.getLogger(__name__)


def load_target(target: str, where: str) -> object:
    """``module:attr.path`` -> the object; ConfigError naming ``where`` otherwise."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise ConfigError(f"{where}: {target!r} is not of the form 'module:attribute'")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot import {module_name}: {exc!r}") from exc
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ConfigError(f"{where}: {module_name} has no attribute {attr_path}") from exc
    return obj


def build_policy(settings: Settings) -> EscalationPolicy:
    name = settings.critic_policy
    if name == "extend_once":
        return ExtendOnce(extend_s=settings.critic_extend_s, nudge=settings.critic_nudge)
    if name == "kill_on_stall":
        return KillOnStall()
    where = "EXECUTUS_CRITIC_POLICY"
    factory = load_target(name, where)
    if not callable(factory):
        raise ConfigError(f"{where}: {name} is not callable")
    try:
        policy = factory()
    except Exception as exc:
        raise ConfigError(f"{where}: {name}() raised {exc!r}") from exc
    if not callable(getattr(policy, "decide", None)):
        raise ConfigError(f"{where}: {name}() returned {policy!r}, which has no decide()")
    return cast(EscalationPolicy, policy)  # checked structurally just above


def agent_runtime(registry: AgentRegistry) -> Callable[[RunInfo], float | None]:
    """The agent's own runtime budget: an optional ``runtime_s`` attribute on the agent."""

    def runtime_s(run: RunInfo) -> float | None:
        value = getattr(registry.get(run.agent), "runtime_s", None)
        return float(value) if isinstance(value, int | float) and value > 0 else None

    return runtime_s


def build_critic(settings: Settings, audit: Audit, registry: AgentRegistry | None = None) -> Critic:
    """The watchdog (one thread per process), or the null critic when switched off."""
    if not settings.critic_enabled:
        return NullCritic()
    try:
        policy = build_policy(settings)
    except ConfigError as exc:
        # A worker must not crash on every delivery over a setting: say so loudly, keep the
        # default policy (one extension, then a kill) so budgets are still enforced.
        log.error("%s; using the default policy extend_once", exc)
        policy = ExtendOnce(extend_s=settings.critic_extend_s, nudge=settings.critic_nudge)
    critic = TimeoutCritic(
        policy=policy,
        runtime_s=settings.critic_runtime_s,
        backstop_mul=settings.critic_backstop_mul,
        audit=audit,
        interrupt=interrupt_step,
        tick_s=settings.critic_tick_s,
    )
    if registry is not None:
        critic.agent_runtime_s = agent_runtime(registry)
    critic.start()
    return critic


def event_log(settings: Settings, client: redis.Redis) -> RedisEventLog:
    return RedisEventLog(
        client,
        KeySchema(settings.key_prefix),
        maxlen=settings.audit_stream_maxlen,
        ttl_s=settings.effective_audit_stream_ttl_s,
    )


def build_audit(settings: Settings, client: redis.Redis) -> tuple[Audit, StreamAudit | None]:
    """Events to the log (DEBUG: ids and outcomes, never inputs) and, unless switched off, to
    each run's event stream."""
    logging_audit = LoggingAudit(level=logging.DEBUG)
    if not settings.audit_stream:
        return logging_audit, None
    stream = StreamAudit(event_log(settings, client))
    return FanoutAudit([logging_audit, stream]), stream


@dataclass
class Batteries:
    """What ``Deps`` gets besides the checkpoints; every field defaults to its null object."""

    audit: Audit = field(default_factory=NullAudit)
    critic: Critic = field(default_factory=NullCritic)
    budget: Budget = field(default_factory=NullBudget)
    persona: Persona = field(default_factory=NullPersona)
    skills: Skills = field(default_factory=NullSkills)
    closers: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        """Write events still waiting for company, stop the watchdog. Never raises."""
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("closing a battery failed (ignored)")


def build_budget(settings: Settings, client: redis.Redis, audit: Audit) -> LedgerBudget:
    """Always wired: a run no limit applies to costs it nothing, and a request's own limits
    (metadata) must work without any setting."""
    s = settings
    ledger = RedisSpendLedger(client, KeySchema(s.key_prefix), run_ttl_s=s.result_ttl_s)
    limits = BudgetLimits(
        run_tokens=s.budget_run_max_tokens,
        run_cost_usd=s.budget_run_max_cost_usd,
        guild_day_tokens=s.budget_guild_daily_tokens,
        guild_day_cost_usd=s.budget_guild_daily_cost_usd,
    )
    return LedgerBudget(ledger, limits, track_all=s.budget_track_all, audit=audit)


def build_batteries(
    settings: Settings, client: redis.Redis, registry: AgentRegistry | None = None
) -> Batteries:
    audit, stream = build_audit(settings, client)
    critic = build_critic(settings, audit, registry)
    batteries = Batteries(audit=audit, critic=critic, budget=build_budget(settings, client, audit))
    if stream is not None:
        batteries.closers.append(stream.flush)
    if isinstance(critic, TimeoutCritic):
        batteries.closers.append(critic.close)
    return batteries
