"""Optional batteries: audit, budget, persona, skill. Each port's default is a null object in
``core.ports``; these are the real implementations to plug into ``Deps``."""

from executus_worker.batteries.audit import LoggingAudit, MemoryAudit
from executus_worker.batteries.budget import BudgetExceeded, TokenBudget
from executus_worker.batteries.persona import GuildPersona, StaticPersona
from executus_worker.batteries.skill import Skill, SkillSet

__all__ = [
    "BudgetExceeded",
    "GuildPersona",
    "LoggingAudit",
    "MemoryAudit",
    "Skill",
    "SkillSet",
    "StaticPersona",
    "TokenBudget",
]
