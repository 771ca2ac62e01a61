"""Escalation policies: what the critic does when a run passes its soft deadline (a *stall*).

A policy is asked once per stall and answers with one decision or several:

    Nudge(message)    a message for the agent's next model call, asking it to wrap up
    ExtendBy(s)       move the soft deadline to s seconds of runtime from now
    Kill(reason)      end the run: status failed, reason ``critic_kill``, never recovered

Combining them is allowed (``[Nudge(...), ExtendBy(60)]``: "wrap up, you have a minute"), and a
Kill wins over anything returned with it. A stall answered without an ExtendBy leaves the run
to the hard backstop. Policies are plain objects asked with a ``Stall``: everything a policy may
know about the run's history (``stalls``, ``fired``) comes from the run's own critic state, which
lives in its checkpoint -- so a policy object holds no per-run state, is shared safely by every
run in the process, and its decisions survive a resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from executus_worker.core.models import RunInfo


@dataclass(frozen=True)
class Nudge:
    message: str


@dataclass(frozen=True)
class ExtendBy:
    seconds: float


@dataclass(frozen=True)
class Kill:
    reason: str


Decision = Nudge | ExtendBy | Kill


@dataclass(frozen=True)
class Stall:
    """What a policy sees: the run, its clocks (runtime seconds across attempts) and history."""

    run: RunInfo
    runtime_s: float  # active time so far, all attempts
    deadline_s: float  # the soft deadline just passed
    budget_s: float  # the run's runtime budget (the first soft deadline)
    backstop_s: float  # where the hard backstop ends the run whatever the policy says
    stalls: int  # 1 for this run's first stall, 2 for the next, ... (across attempts)
    fired: tuple[str, ...]  # decisions taken at earlier stalls: "nudge", "extend", "kill"


class EscalationPolicy(Protocol):
    def decide(self, stall: Stall) -> Decision | Sequence[Decision]: ...


@dataclass(frozen=True)
class ExtendOnce:
    """The default: a run's first stall gets one extension (and the optional nudge), any
    later stall is killed. ``extend_s`` None extends by half the run's runtime budget."""

    extend_s: float | None = None
    nudge: str | None = None

    def decide(self, stall: Stall) -> Decision | Sequence[Decision]:
        if "extend" in stall.fired:
            return Kill(
                f"runtime {stall.runtime_s:.1f}s passed its extended deadline "
                f"{stall.deadline_s:.1f}s"
            )
        seconds = self.extend_s if self.extend_s is not None else stall.budget_s / 2
        decisions: list[Decision] = [ExtendBy(seconds)]
        if self.nudge:
            decisions.append(Nudge(self.nudge))
        return decisions


@dataclass(frozen=True)
class KillOnStall:
    """No second chances: the soft deadline is the limit."""

    def decide(self, stall: Stall) -> Decision | Sequence[Decision]:
        return Kill(f"runtime {stall.runtime_s:.1f}s passed its deadline {stall.deadline_s:.1f}s")


class BadDecision(ValueError):
    """A policy answer that is not a decision (or holds an impossible one)."""


@dataclass(frozen=True)
class Resolved:
    """A policy's answer, validated and folded: a kill wins, extensions add up."""

    kill: str | None = None
    extend_s: float | None = None
    nudges: tuple[str, ...] = ()

    @property
    def fired(self) -> tuple[str, ...]:
        if self.kill is not None:
            return ("kill",)
        names = ("extend",) if self.extend_s is not None else ()
        return names + (("nudge",) if self.nudges else ())


def resolve(answer: object) -> Resolved:
    """Validate what a policy returned; BadDecision says what was wrong with it."""
    items: Sequence[object]
    if isinstance(answer, Nudge | ExtendBy | Kill):
        items = (answer,)
    elif isinstance(answer, list | tuple) and answer:
        items = answer
    else:
        raise BadDecision(f"expected Nudge, ExtendBy, Kill or a non-empty list, got {answer!r}")
    # A kill wins over whatever came with it, even over nonsense: ending a stalled run is the
    # safe reading of an answer that asks for it.
    for item in items:
        if isinstance(item, Kill):
            return Resolved(kill=str(item.reason or "") or "killed by the escalation policy")
    extend_s: float | None = None
    nudges: list[str] = []
    for item in items:
        if isinstance(item, ExtendBy):
            seconds = item.seconds
            if (
                not isinstance(seconds, int | float)
                or isinstance(seconds, bool)
                or not math.isfinite(seconds)
                or seconds <= 0
            ):
                raise BadDecision(f"ExtendBy needs a positive, finite number of seconds: {item!r}")
            extend_s = (extend_s or 0.0) + float(seconds)
        elif isinstance(item, Nudge):
            if not isinstance(item.message, str) or not item.message.strip():
                raise BadDecision(f"Nudge needs a non-empty message: {item!r}")
            nudges.append(item.message)
        else:
            raise BadDecision(f"not a decision: {item!r}")
    return Resolved(extend_s=extend_s, nudges=tuple(nudges))
