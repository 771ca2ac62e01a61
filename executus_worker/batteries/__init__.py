"""Optional batteries: audit, budget, persona, skill. Each port's default is a null object in
``core.ports``; these are the real implementations to plug into ``Deps`` (the worker wires them
from settings in ``worker/wiring.py``)."""

from executus_worker.batteries.audit import FanoutAudit, LoggingAudit, MemoryAudit, StreamAudit
from executus_worker.batteries.budget import (
    BudgetExceeded,
    BudgetLimits,
    LedgerBudget,
    MemoryLedger,
)
from executus_worker.batteries.persona import GuildPersona, StaticPersona
from executus_worker.batteries.skill import Skill, SkillSet

__all__ = [
    "BudgetExceeded",
    "BudgetLimits",
    "FanoutAudit",
    "GuildPersona",
    "LedgerBudget",
    "LoggingAudit",
    "MemoryAudit",
    "MemoryLedger",
    "Skill",
    "SkillSet",
    "StaticPersona",
    "StreamAudit",
]
