"""Plain functions the skills-file tests name by import path."""

from __future__ import annotations

from executus_worker.core.toolctx import ToolContext


def utc_now() -> str:
    """The current time (a fixed one, for tests)."""
    return "2026-05-01T12:00:00Z"


def lookup_order(order_id: str, ctx: ToolContext) -> dict[str, str]:
    """Find an order by its id."""
    return {"order": order_id, "idempotency_key": ctx.idempotency_key}


def not_a_tool(*args: object) -> None:
    return None
