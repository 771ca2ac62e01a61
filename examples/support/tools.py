"""Tools for the example support agent: plain functions, typed arguments, one side effect.

The order "database" is a dict so the example runs anywhere; a real tool would call a service.
``issue_refund`` shows the one rule for tools with side effects: steps run at least once (a
step in flight when its worker died runs again), so deduplicate on the idempotency key the
kernel gives every call.
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

from pydantic import Field

from executus_worker.core.toolctx import ToolContext

ORDERS: dict[str, dict[str, object]] = {
    "A-1001": {"item": "espresso machine", "price_eur": 249.0, "status": "delivered",
               "delivered": "2024-05-02", "damaged_on_arrival": True},
    "A-1002": {"item": "milk frother", "price_eur": 39.0, "status": "in transit",
               "eta": "2024-05-09"},
    "A-1003": {"item": "grinder", "price_eur": 129.0, "status": "delivered",
               "delivered": "2024-03-01", "damaged_on_arrival": False},
}  # fmt: skip
_REFUNDS: dict[str, dict[str, object]] = {}  # idempotency key -> refund (per process)
_LOCK = threading.Lock()


def lookup_order(
    order_id: Annotated[str, Field(description="The order id, like A-1001")],
) -> dict[str, object]:
    """Look up an order: item, price, delivery status and dates."""
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        raise LookupError(f"no order {order_id!r}")  # the model sees this as a tool error
    return {"order_id": order_id, **order}


def refund_policy(reason: Literal["damaged", "late", "changed_mind"]) -> str:
    """The refund policy for one kind of complaint."""
    return {
        "damaged": "Full refund if reported within 30 days of delivery.",
        "late": "Shipping fee refunded if more than 5 days late; the order can be cancelled.",
        "changed_mind": "Refund minus 10% restocking fee within 14 days of delivery.",
    }[reason]


def issue_refund(
    order_id: str,
    amount_eur: Annotated[float, Field(gt=0)],
    reason: str,
    ctx: ToolContext,
) -> dict[str, object]:
    """Refund an amount for an order. Only after checking the order and the policy."""
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        raise LookupError(f"no order {order_id!r}")
    if amount_eur > float(str(order["price_eur"])):
        raise ValueError(f"{amount_eur} EUR is more than the order's price")
    with _LOCK:
        # A replayed step carries the same key: answer with the first refund, pay nothing twice.
        refund = _REFUNDS.setdefault(
            ctx.idempotency_key,
            {"refund_id": f"R-{len(_REFUNDS) + 1:04d}", "order_id": order_id,
             "amount_eur": amount_eur, "reason": reason},
        )  # fmt: skip
    return refund
