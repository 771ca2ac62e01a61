"""What a tool call knows about the claim it runs under: run id, fencing token, idempotency key.

A tool with external side effects (a payment, an e-mail, a ticket) must be able to deduplicate:
step execution is at-least-once (a step in flight when its owner died runs again), and a stale
owner that was paused past its lease may still start a call. The kernel sets this context around
every tool call, so a tool reads it with :func:`current_tool_context` without the ``Tools``
protocol changing shape.

- ``fence`` is unique to one claim of the run (random, never reused even if Redis forgets
  writes): a downstream service that remembers the newest fence it saw per run can refuse a
  stale owner.
- ``idempotency_key`` is ``<run id>:<iteration>:<call id>``: the same logical call gets the same
  key on every attempt that replays the step with the same model reply.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolContext:
    run_id: str
    fence: str  # the claim's fencing token ("" for a non-durable run)
    epoch: int  # informational: may repeat after a Redis rollback, the fence never does
    iteration: int  # the step this call belongs to (1-based)
    call_id: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.iteration}:{self.call_id}"


_CURRENT: contextvars.ContextVar[ToolContext | None] = contextvars.ContextVar(
    "executus_tool_context", default=None
)


def current_tool_context() -> ToolContext | None:
    """The context of the tool call running on this thread, or None outside one."""
    return _CURRENT.get()


@contextlib.contextmanager
def tool_context(ctx: ToolContext) -> Iterator[ToolContext]:
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)
