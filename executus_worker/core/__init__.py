"""The run kernel: models, ports, the stop token and the executor.

Imports only the standard library and pydantic (a test keeps it that way).
"""

from executus_worker.core.agents import AgentRegistry
from executus_worker.core.demo_agents import CounterAgent, PhasedAgent
from executus_worker.core.executor import execute
from executus_worker.core.models import (
    Checkpoint,
    Message,
    OutcomeKind,
    RunInfo,
    RunOutcome,
    RunRecord,
    RunRequest,
    RunStatus,
    ToolCall,
)
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel, ScriptExhausted, say
from executus_worker.core.stop import (
    CancelRequested,
    CriticKilled,
    OwnershipLost,
    RunStopped,
    ShutdownRequested,
    StopReason,
    StopToken,
)

__all__ = [
    "AgentRegistry",
    "CancelRequested",
    "Checkpoint",
    "CounterAgent",
    "CriticKilled",
    "Message",
    "OutcomeKind",
    "OwnershipLost",
    "PhasedAgent",
    "RunInfo",
    "RunOutcome",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "RunStopped",
    "ScriptExhausted",
    "ScriptedAgent",
    "ScriptedModel",
    "ShutdownRequested",
    "StopReason",
    "StopToken",
    "ToolCall",
    "execute",
    "say",
]
