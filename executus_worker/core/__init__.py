"""The run kernel: models, ports, the stop token and the executor.

Imports only the standard library and pydantic (a test keeps it that way).
"""

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
    "CancelRequested",
    "Checkpoint",
    "CriticKilled",
    "Message",
    "OutcomeKind",
    "OwnershipLost",
    "RunInfo",
    "RunOutcome",
    "RunRecord",
    "RunRequest",
    "RunStatus",
    "RunStopped",
    "ShutdownRequested",
    "StopReason",
    "StopToken",
    "ToolCall",
]
