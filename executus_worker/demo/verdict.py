"""The demo's end checks, as pure functions over what it read back from Redis.

- **exact**: the final transcript is the agent's expected one, each step once, in order;
- **one owner at a time**: no step of one claim (fence) overlaps in time a step of another
  claim of the same run, and every step of an older claim started before the first step of a
  newer one (a stale owner never stepped after a takeover);
- steps may *execute* more than once (at-least-once: a step in flight when its worker died
  runs again); the report counts those re-runs, they are not a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from executus_worker.demo.agents import Step


@dataclass
class RunVerdict:
    run_id: str
    status: str
    expected: list[str]
    transcript: list[str]
    steps: list[Step] = field(default_factory=list)  # executions, in start order
    conflicts: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.transcript == self.expected

    @property
    def ok(self) -> bool:
        return self.status == "completed" and self.exact and not self.conflicts

    @property
    def reruns(self) -> int:
        return len(self.steps) - len({s.msg for s in self.steps})


def judge(
    run_id: str, status: str, expected: list[str], transcript: list[str], trace: Sequence[Step]
) -> RunVerdict:
    steps = sorted((s for s in trace if s.run == run_id), key=lambda s: s.t0)
    verdict = RunVerdict(run_id, status, expected, transcript, steps)
    verdict.conflicts = ownership_conflicts(steps)
    return verdict


def ownership_conflicts(steps: Sequence[Step]) -> list[str]:
    problems = []
    for a, b in combinations(steps, 2):
        if a.claim != b.claim and a.t0 < b.t1 and b.t0 < a.t1:
            problems.append(
                f"{a.msg!r} (epoch {a.epoch}, pid {a.pid}) overlapped "
                f"{b.msg!r} (epoch {b.epoch}, pid {b.pid})"
            )
    # Claims in claim order (epoch; the first step's time where an epoch repeats): a step of
    # one claim that starts after a later claim began stepping is a stale owner's.
    first_start: dict[tuple[int, str], float] = {}
    for step in steps:
        first_start.setdefault(step.claim, step.t0)
    order = sorted(first_start, key=lambda c: (c[0], first_start[c]))
    for step in steps:
        later = order[order.index(step.claim) + 1 :]
        took_over = [c for c in later if first_start[c] < step.t0]
        if took_over:
            problems.append(
                f"{step.msg!r} of epoch {step.epoch} (pid {step.pid}) started after epoch "
                f"{took_over[0][0]} had taken over"
            )
    return problems


def claims_text(steps: Sequence[Step], label: Callable[[int], str]) -> str:
    """``epoch 1 A (prefork) step 1-step 4; epoch 2 B2 (threads) step 4-step 12``."""
    parts = []
    for claim in dict.fromkeys(s.claim for s in steps):  # in the order they first stepped
        mine = [s for s in steps if s.claim == claim]
        span = mine[0].msg if len(mine) == 1 else f"{mine[0].msg} .. {mine[-1].msg}"
        parts.append(f"epoch {claim[0]} {label(mine[0].pid)}: {span}")
    return "; ".join(parts) or "no steps traced"
