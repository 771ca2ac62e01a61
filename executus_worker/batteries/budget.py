"""Budget battery: tokens and cost per run (across all its attempts) and per guild per UTC day,
persisted in a ledger (Redis counters in the worker: ``checkpoint.spend``), with limits.

Limits (None: no limit):

- per run: ``run_tokens`` / ``run_cost_usd`` from settings, tightened by the request's
  ``metadata["executus.max_tokens"]`` / ``["executus.max_cost_usd"]`` (``core.limits``): the
  lower of the two applies, so a request can ask for less than the operator allows, never more;
- per guild per day: ``guild_day_tokens`` / ``guild_day_cost_usd``, keyed by guild id, ``"*"``
  for every guild without its own entry. Runs without a guild id have no daily limit.

Before each model call the run is stopped if a limit is already reached; after each call its
usage is added and the run is stopped if a limit is now exceeded (the step that crossed it is
not committed: the transcript keeps every step before it). The stop is ``BudgetExceeded`` -- the
battery's one control exception: the run ends ``failed`` with ``budget_exceeded: <why>`` and a
``budget_stop`` audit event. Anything else going wrong here (the ledger unreachable) is logged
by the executor and the run goes on.

A run no limit applies to costs nothing: no ledger round trip (unless ``track_all``). A run with
limits costs one round trip per model step, plus one read at the start of each attempt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pydantic import JsonValue

from executus_worker.core.limits import MAX_COST_USD, MAX_TOKENS, metadata_limit
from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Audit, NullAudit, Usage
from executus_worker.core.stop import BudgetExceeded

__all__ = ["BudgetExceeded", "BudgetLimits", "LedgerBudget", "MemoryLedger", "SpendLedger"]

log = logging.getLogger(__name__)

Totals = tuple[int, float]  # tokens, cost in USD


class SpendLedger(Protocol):
    def add(
        self, run_id: str, guild_id: str | None, day: str, usage: Usage
    ) -> tuple[Totals, Totals | None]:
        """Add a step's usage; the run's and the guild's day totals after it."""
        ...

    def totals(
        self, run_id: str, guild_id: str | None, day: str
    ) -> tuple[Totals, Totals | None]: ...


@dataclass(frozen=True)
class BudgetLimits:
    run_tokens: int | None = None
    run_cost_usd: float | None = None
    guild_day_tokens: Mapping[str, int] = field(default_factory=dict)
    guild_day_cost_usd: Mapping[str, float] = field(default_factory=dict)

    def for_run(self, run: RunInfo) -> _Applicable:
        def tighter(setting: float | None, requested: float | None) -> float | None:
            if setting is None or requested is None:
                return requested if setting is None else setting
            return min(setting, requested)

        guild = run.guild_id
        return _Applicable(
            run_tokens=tighter(self.run_tokens, metadata_limit(run.metadata, MAX_TOKENS)),
            run_cost_usd=tighter(self.run_cost_usd, metadata_limit(run.metadata, MAX_COST_USD)),
            guild_tokens=_per_guild(self.guild_day_tokens, guild),
            guild_cost_usd=_per_guild(self.guild_day_cost_usd, guild),
        )


def _per_guild(table: Mapping[str, float], guild: str | None) -> float | None:
    if guild is None:
        return None
    return table.get(guild, table.get("*"))


@dataclass(frozen=True)
class _Applicable:
    run_tokens: float | None
    run_cost_usd: float | None
    guild_tokens: float | None
    guild_cost_usd: float | None

    @property
    def any(self) -> bool:
        return any(
            v is not None
            for v in (self.run_tokens, self.run_cost_usd, self.guild_tokens, self.guild_cost_usd)
        )

    def breach(self, run: Totals, guild: Totals | None, *, reached: bool) -> str | None:
        """Why the run must stop, or None. ``reached``: at the limit already counts (before a
        call: nothing left to spend); else only over it counts (after a call)."""

        def past(value: float, limit: float | None) -> bool:
            return limit is not None and (value >= limit if reached else value > limit)

        tokens, cost = run
        if past(tokens, self.run_tokens):
            return f"run used {tokens:,} tokens of its {self.run_tokens:,.0f}"
        if past(cost, self.run_cost_usd):
            return f"run spent ${cost:.4f} of its ${self.run_cost_usd:.4f}"
        if guild is not None:
            g_tokens, g_cost = guild
            if past(g_tokens, self.guild_tokens):
                return f"guild used {g_tokens:,} tokens today of its {self.guild_tokens:,.0f}"
            if past(g_cost, self.guild_cost_usd):
                return f"guild spent ${g_cost:.4f} today of its ${self.guild_cost_usd:.4f}"
        return None


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


class LedgerBudget:
    """Implements ``core.ports.Budget`` on a ``SpendLedger``."""

    def __init__(
        self,
        ledger: SpendLedger,
        limits: BudgetLimits | None = None,
        *,
        track_all: bool = False,
        audit: Audit | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._limits = limits or BudgetLimits()
        self._track_all = track_all
        self._audit = audit or NullAudit()
        self._clock = clock
        # Per attempt (run id, epoch): the totals last seen, so the check before a model call
        # reads the ledger once per attempt, not once per step.
        self._seen: dict[tuple[str, int], tuple[Totals, Totals | None]] = {}
        self._lock = threading.Lock()

    def check(self, run: RunInfo) -> None:
        limits = self._limits.for_run(run)
        if not limits.any:
            return
        key = (run.run_id, run.epoch)
        with self._lock:
            seen = self._seen.get(key)
        if seen is None:
            seen = self._ledger.totals(run.run_id, run.guild_id, utc_day(self._clock()))
            self._remember(key, seen)
        self._enforce(run, limits, seen, reached=True)

    def charge(self, run: RunInfo, usage: Usage) -> None:
        limits = self._limits.for_run(run)
        if not (limits.any or self._track_all):
            return
        if usage.input_tokens == 0 and usage.output_tokens == 0 and usage.cost_usd == 0:
            return
        totals = self._ledger.add(run.run_id, run.guild_id, utc_day(self._clock()), usage)
        self._remember((run.run_id, run.epoch), totals)
        self._enforce(run, limits, totals, reached=False)

    def _remember(self, key: tuple[str, int], totals: tuple[Totals, Totals | None]) -> None:
        with self._lock:
            if len(self._seen) > 10_000:  # finished attempts are never looked up again
                self._seen.clear()
            self._seen[key] = totals

    def _enforce(
        self, run: RunInfo, limits: _Applicable, totals: tuple[Totals, Totals | None], *,
        reached: bool,
    ) -> None:  # fmt: skip
        why = limits.breach(*totals, reached=reached)
        if why is None:
            return
        (tokens, cost), guild = totals
        data: dict[str, JsonValue] = {"why": why, "run_tokens": tokens, "run_cost_usd": cost}
        if guild is not None:
            data["guild_tokens"], data["guild_cost_usd"] = guild
        try:
            self._audit.record(run, "budget_stop", data)
        except Exception:  # the stop matters more than its event
            log.exception("audit failed for run %s (ignored)", run.run_id)
        with self._lock:
            self._seen.pop((run.run_id, run.epoch), None)
        raise BudgetExceeded(why)


class MemoryLedger:
    """A SpendLedger in one process: for tests, the demo and users' own tests."""

    def __init__(self) -> None:
        self._runs: dict[str, list[float]] = {}
        self._guilds: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def add(
        self, run_id: str, guild_id: str | None, day: str, usage: Usage
    ) -> tuple[Totals, Totals | None]:
        tokens = usage.input_tokens + usage.output_tokens
        with self._lock:
            counters = [self._runs.setdefault(run_id, [0, 0.0])]
            if guild_id is not None:
                counters.append(self._guilds.setdefault((guild_id, day), [0, 0.0]))
            for counter in counters:
                counter[0] += tokens
                counter[1] += usage.cost_usd
            return self._totals(run_id, guild_id, day)

    def totals(self, run_id: str, guild_id: str | None, day: str) -> tuple[Totals, Totals | None]:
        with self._lock:
            return self._totals(run_id, guild_id, day)

    def _totals(self, run_id: str, guild_id: str | None, day: str) -> tuple[Totals, Totals | None]:
        run = self._runs.get(run_id, [0, 0.0])
        guild = self._guilds.get((guild_id, day), [0, 0.0]) if guild_id is not None else None
        return (int(run[0]), float(run[1])), (
            (int(guild[0]), float(guild[1])) if guild is not None else None
        )
