"""Build the critic and the batteries from Settings; each one optional, null when unset.

Kept apart from ``runtime.py`` (which owns processes, clients and caching) so that what a
setting turns on is readable in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from executus_worker.batteries.audit import FanoutAudit, LoggingAudit, StreamAudit
from executus_worker.batteries.budget import BudgetLimits, LedgerBudget
from executus_worker.batteries.persona import PersonaBook
from executus_worker.checkpoint.events import RedisEventLog
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
from executus_worker.redis_connect import StateClient
from executus_worker.settings import Settings
from executus_worker.worker.interrupt import interrupt_step
from executus_worker.worker.skills import load_skills
from executus_worker.worker.targets import load_target

log = logging.getLogger(__name__)

T = TypeVar("T")


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


def event_log(settings: Settings, client: StateClient) -> RedisEventLog:
    return RedisEventLog(
        client,
        settings.key_schema(),
        maxlen=settings.audit_stream_maxlen,
        ttl_s=settings.effective_audit_stream_ttl_s,
    )


def build_audit(settings: Settings, client: StateClient) -> tuple[Audit, StreamAudit | None]:
    """Events to the log (DEBUG: ids and outcomes, never inputs) and, unless switched off, to
    each run's event stream."""
    logging_audit = LoggingAudit(level=logging.DEBUG)
    if not settings.audit_stream:
        return logging_audit, None
    stream = StreamAudit(event_log(settings, client), linger_s=settings.audit_linger_ms / 1000)
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


def build_budget(settings: Settings, client: StateClient, audit: Audit) -> LedgerBudget:
    """Always wired: a run no limit applies to costs it nothing, and a request's own limits
    (metadata) must work without any setting."""
    s = settings
    ledger = RedisSpendLedger(client, s.key_schema(), run_ttl_s=s.result_ttl_s)
    limits = BudgetLimits(
        run_tokens=s.budget_run_max_tokens,
        run_cost_usd=s.budget_run_max_cost_usd,
        guild_day_tokens=s.budget_guild_daily_tokens,
        guild_day_cost_usd=s.budget_guild_daily_cost_usd,
    )
    return LedgerBudget(ledger, limits, track_all=s.budget_track_all, audit=audit)


def build_persona(settings: Settings) -> Persona:
    if settings.persona_file is None:
        return NullPersona()
    return PersonaBook.load(settings.persona_file)


def build_skills(settings: Settings, registry: AgentRegistry | None = None) -> Skills:
    if settings.skills_file is None:
        return NullSkills()
    return load_skills(settings.skills_file, settings, registry)


def check_battery_files(settings: Settings) -> None:
    """Load the persona and skills files as a worker will: ConfigError naming file and entry
    (``executus-worker worker`` calls this before Celery starts)."""
    build_persona(settings)
    build_skills(settings)


def _contained(what: str, build: Callable[[], T], null: T) -> T:
    """A battery whose file is broken is logged and left out: a running worker keeps serving
    runs (the ``worker`` command refuses to start with it, see check_battery_files)."""
    try:
        return build()
    except ConfigError as exc:
        log.error("%s left out: %s", what, exc)
        return null


def build_batteries(
    settings: Settings, client: StateClient, registry: AgentRegistry | None = None
) -> Batteries:
    audit, stream = build_audit(settings, client)
    critic = build_critic(settings, audit, registry)
    no_persona: Persona = NullPersona()
    no_skills: Skills = NullSkills()
    batteries = Batteries(
        audit=audit,
        critic=critic,
        budget=build_budget(settings, client, audit),
        persona=_contained("persona battery", lambda: build_persona(settings), no_persona),
        skills=_contained("skill battery", lambda: build_skills(settings, registry), no_skills),
    )
    if stream is not None:
        batteries.closers.append(stream.flush)
    if isinstance(critic, TimeoutCritic):
        batteries.closers.append(critic.close)
    return batteries
