"""An agent for the lease fault tests: every step calls a tool with a side effect, and the
first attempt's second step first calls a tool that holds the GIL past the lease.

Imported by the *worker* (through the agents file the tests write). Each side effect is logged
to the same step list as the e2e agents' model steps (``E2E_STEPS_URL``, straight to Redis),
with the claim's fencing token and idempotency key from the tool context, so a test can prove
that no side effect of a stale owner started after another claim took the run.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from e2e_agents import _log

from executus_worker.core.models import Message, RunInfo, ToolCall
from executus_worker.core.ports import Agent, Model, ModelReply, ModelRequest, Tools, ToolSpec
from executus_worker.core.scripted import say
from executus_worker.core.toolctx import current_tool_context

GIL_HOLD_S = float(os.environ.get("LEASE_AGENT_GIL_HOLD_S", "6"))


def _hold_gil(seconds: float) -> None:
    """Busy-loop with a switch interval longer than the loop: no other thread of this process
    (the lease renewal thread included) runs until it returns -- a C extension holding the GIL."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds + 5)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    finally:
        sys.setswitchinterval(previous)


class _Model:
    def __init__(self, steps: int) -> None:
        self._steps = steps

    def complete(self, request: ModelRequest) -> ModelReply:
        run = request.run
        step = 1 + sum(1 for m in request.messages if m.role == "assistant")
        calls = [ToolCall(id=f"effect-{step}", name="side_effect", arguments={"step": step})]
        if step == 2 and run.epoch == 1:
            calls.insert(0, ToolCall(id="hold", name="hold_gil", arguments={}))
        _log({"run": run.run_id, "epoch": run.epoch, "fence": run.fence, "pid": os.getpid(),
              "ev": "start", "t": time.time()})  # fmt: skip
        done = step >= self._steps
        reply = say(f"step {step}", done=done, output=f"done {step}" if done else None,
                    tool_calls=calls)  # fmt: skip
        _log({"run": run.run_id, "epoch": run.epoch, "fence": run.fence, "pid": os.getpid(),
              "ev": "end", "msg": f"step {step}", "t": time.time()})  # fmt: skip
        return reply


class _Tools:
    def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
        return [ToolSpec("side_effect"), ToolSpec("hold_gil")]

    def call(self, run: RunInfo, call: ToolCall) -> Message:
        if call.name == "hold_gil":
            _hold_gil(GIL_HOLD_S)
        else:
            ctx = current_tool_context()
            assert ctx is not None
            _log({"run": run.run_id, "epoch": run.epoch, "fence": ctx.fence, "pid": os.getpid(),
                  "ev": "effect", "key": ctx.idempotency_key, "t": time.time()})  # fmt: skip
        return Message(role="tool", content="ok", tool_call_id=call.id, name=call.name)


class _Agent:
    name = "fault.effects"

    def phases(self, run: RunInfo) -> Sequence[str] | None:
        return None

    def model(self, run: RunInfo) -> Model:
        return _Model(int(run.input.get("steps", 4)))  # type: ignore[arg-type]

    def tools(self, run: RunInfo) -> Tools:
        return _Tools()

    def seed(self, run: RunInfo, phase: str | None) -> Sequence[Message]:
        return ()


def effects() -> Agent:
    return _Agent()
