"""A tool the declared e2e agent names by import path (imported by the *worker*).

Every call is logged to the test's Redis list with the context the kernel gave it, so a test
can see which calls ran, under which claim, and how often.
"""

from __future__ import annotations

import os

from e2e_agents import _log

from executus_worker.core.toolctx import ToolContext


def tick(a: int, b: int, ctx: ToolContext) -> int:
    """Add two integers (and log the call)."""
    _log({
        "ev": "tool", "run": ctx.run_id, "key": ctx.idempotency_key, "fence": ctx.fence,
        "epoch": ctx.epoch, "pid": os.getpid(),
    })  # fmt: skip
    return a + b
