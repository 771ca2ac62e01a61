"""Tools the declared-agent tests name by import path (``tests.models.declared_tools:add``)."""

from __future__ import annotations

from executus_worker.core.toolctx import ToolContext

CALLS: list[str] = []


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def note(text: str, ctx: ToolContext) -> str:
    """Remember a note (records the idempotency key it ran under)."""
    CALLS.append(ctx.idempotency_key)
    return "noted"


NOT_A_FUNCTION = 3


def star(*numbers: int) -> int:
    return sum(numbers)
