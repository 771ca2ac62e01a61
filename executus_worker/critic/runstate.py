"""The critic's per-run state, as it lives in the checkpoint's ``critic_state``.

    elapsed_s    active runtime of the run so far, across attempts (time spent queued or
                 interrupted does not count)
    budget_s     the run's runtime budget when it was first watched (for readers)
    deadline_s   the current soft deadline in runtime seconds; null once a stall was answered
                 without an extension (only the backstop is left)
    stalls       how many soft deadlines the run has passed
    fired        the decisions taken so far, in order ("extend", "nudge", "kill")
    nudges       messages decided but not yet delivered to a finished step
    killed       the kill reason, once killed (sticky: a resumed run is killed again at once)

Stored state is read defensively: a field of the wrong type is dropped with a warning and its
default used, so a hand-edited or older checkpoint never stops a run from being watched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import JsonValue

log = logging.getLogger(__name__)

_FIRED = {"extend", "nudge", "kill"}


@dataclass
class CriticState:
    elapsed_s: float = 0.0
    budget_s: float | None = None
    deadline_s: float | None = None
    deadline_set: bool = False  # False: no deadline stored yet, start from the budget
    stalls: int = 0
    fired: list[str] = field(default_factory=list)
    nudges: list[str] = field(default_factory=list)
    killed: str | None = None

    @classmethod
    def restore(cls, run_id: str, raw: Mapping[str, JsonValue]) -> CriticState:
        state = cls()
        problems: list[str] = []
        elapsed = _number(raw.get("elapsed_s", 0.0))
        if elapsed is not None and elapsed >= 0:
            state.elapsed_s = elapsed
        else:
            problems.append("elapsed_s")
        if "deadline_s" in raw:
            deadline = _number(raw["deadline_s"])
            if raw["deadline_s"] is None or deadline is not None:
                state.deadline_s = deadline
                state.deadline_set = True
            else:
                problems.append("deadline_s")
        stalls = raw.get("stalls", 0)
        if isinstance(stalls, int) and not isinstance(stalls, bool) and stalls >= 0:
            state.stalls = stalls
        else:
            problems.append("stalls")
        state.fired = _strings(raw.get("fired"), problems, "fired", allowed=_FIRED)
        state.nudges = _strings(raw.get("nudges"), problems, "nudges")
        killed = raw.get("killed")
        if isinstance(killed, str) and killed:
            state.killed = killed
        elif killed is not None:
            problems.append("killed")
        if problems:
            log.warning("run %s: ignored unreadable critic state fields %s", run_id, problems)
        return state

    def dump(self) -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {
            "elapsed_s": round(self.elapsed_s, 3),
            "budget_s": self.budget_s,
            "deadline_s": None if self.deadline_s is None else round(self.deadline_s, 3),
            "stalls": self.stalls,
            "fired": list(self.fired),
            "nudges": list(self.nudges),
        }
        if self.killed is not None:
            out["killed"] = self.killed
        return out


def _number(value: object) -> float | None:
    """A finite int or float as float; None for anything else (bools included)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _strings(
    value: object, problems: list[str], name: str, allowed: set[str] | None = None
) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(
        isinstance(v, str) and (allowed is None or v in allowed) for v in value
    ):
        return [str(v) for v in value]
    problems.append(name)
    return []
