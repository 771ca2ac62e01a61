"""The budget battery on the in-memory ledger: which limits apply, when a run is stopped, and
that spend is the run's across attempts, not the process's."""

from __future__ import annotations

import pytest
from pydantic import JsonValue

from executus_worker.batteries.budget import (
    BudgetExceeded,
    BudgetLimits,
    LedgerBudget,
    MemoryLedger,
    Totals,
    utc_day,
)
from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Usage

DAY_S = 86_400.0
NOON = 1_780_000_000.0 - 1_780_000_000.0 % DAY_S + DAY_S / 2


class CountingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.adds = 0
        self.reads = 0

    def add(
        self, run_id: str, guild_id: str | None, day: str, usage: Usage
    ) -> tuple[Totals, Totals | None]:
        self.adds += 1
        return super().add(run_id, guild_id, day, usage)

    def totals(self, run_id: str, guild_id: str | None, day: str) -> tuple[Totals, Totals | None]:
        self.reads += 1
        return super().totals(run_id, guild_id, day)


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, JsonValue]]] = []

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        self.events.append((event, data))


def run(run_id: str = "r1", *, guild: str | None = None, epoch: int = 1, **meta: str) -> RunInfo:
    return RunInfo(run_id=run_id, agent="a", guild_id=guild, epoch=epoch, metadata=meta)


def tokens(n: int, cost: float = 0.0) -> Usage:
    return Usage(input_tokens=n, output_tokens=0, cost_usd=cost)


class Clock:
    def __init__(self) -> None:
        self.t = NOON

    def __call__(self) -> float:
        return self.t


def test_a_run_no_limit_applies_to_costs_no_ledger_call() -> None:
    ledger = CountingLedger()
    budget = LedgerBudget(ledger, BudgetLimits(guild_day_tokens={"other": 5}))
    budget.check(run(guild="g1"))
    budget.charge(run(guild="g1"), tokens(10_000))
    assert (ledger.adds, ledger.reads) == (0, 0)
    LedgerBudget(ledger, track_all=True).charge(run(), tokens(7))
    assert ledger.adds == 1  # tracked when asked to
    LedgerBudget(ledger, track_all=True).charge(run(), Usage())
    assert ledger.adds == 1  # nothing spent, nothing to count


def test_exceeding_the_run_limit_stops_the_run_with_an_event() -> None:
    events = Events()
    budget = LedgerBudget(MemoryLedger(), BudgetLimits(run_tokens=100), audit=events)
    budget.charge(run(), tokens(60))
    budget.charge(run(), tokens(40))  # at the limit is still within it
    with pytest.raises(BudgetExceeded, match="run used 120 tokens of its 100"):
        budget.charge(run(), tokens(20))
    (event, data) = events.events[-1]
    assert event == "budget_stop"
    assert data["run_tokens"] == 120 and "120 tokens" in str(data["why"])
    with pytest.raises(BudgetExceeded):  # a later attempt stops before spending more
        budget.check(run(epoch=2))


def test_cost_limits_work_like_token_limits() -> None:
    budget = LedgerBudget(MemoryLedger(), BudgetLimits(run_cost_usd=0.5))
    budget.charge(run(), tokens(1, cost=0.3))
    with pytest.raises(BudgetExceeded, match=r"run spent \$0.6000 of its \$0.5000"):
        budget.charge(run(), tokens(1, cost=0.3))


@pytest.mark.parametrize(
    ("setting", "requested", "applies"),
    [(1000, "100", 100), (100, "5000", 100), (None, "100", 100), (100, None, 100)],
)
def test_a_request_can_lower_the_run_limit_never_raise_it(
    setting: int | None, requested: str | None, applies: int
) -> None:
    meta = {"executus.max_tokens": requested} if requested else {}
    budget = LedgerBudget(MemoryLedger(), BudgetLimits(run_tokens=setting))
    budget.charge(run(**meta), tokens(applies))
    with pytest.raises(BudgetExceeded, match=f"of its {applies}"):
        budget.charge(run(**meta), tokens(1))


def test_a_request_cost_limit_needs_no_setting() -> None:
    budget = LedgerBudget(MemoryLedger())
    budget.charge(run(**{"executus.max_cost_usd": "0.01"}), tokens(1, cost=0.005))
    with pytest.raises(BudgetExceeded):
        budget.charge(run(**{"executus.max_cost_usd": "0.01"}), tokens(1, cost=0.01))


def test_guild_daily_limits_per_guild_with_a_default_for_the_rest() -> None:
    clock = Clock()
    limits = BudgetLimits(guild_day_tokens={"*": 100, "big": 1000})
    budget = LedgerBudget(MemoryLedger(), limits, clock=clock)
    budget.charge(run("a", guild="small"), tokens(60))
    with pytest.raises(BudgetExceeded, match="guild used 110 tokens today of its 100"):
        budget.charge(run("b", guild="small"), tokens(50))  # another run of the same guild
    budget.charge(run("c", guild="big"), tokens(500))
    budget.charge(run("d"), tokens(10_000))  # no guild: no daily limit
    with pytest.raises(BudgetExceeded):
        budget.check(run("e", guild="small"))  # spent for today: stopped before any call
    clock.t += DAY_S  # a new UTC day starts from zero
    budget.check(run("f", guild="small"))
    budget.charge(run("f", guild="small"), tokens(90))


def test_the_check_reads_the_ledger_once_per_attempt() -> None:
    ledger = CountingLedger()
    budget = LedgerBudget(ledger, BudgetLimits(run_tokens=100))
    for _ in range(3):
        budget.check(run())
        budget.charge(run(), tokens(10))
    assert ledger.reads == 1
    budget.check(run(epoch=2))  # a new attempt (maybe another process): read again
    assert ledger.reads == 2


def test_spend_is_the_runs_across_attempts_and_processes() -> None:
    ledger = MemoryLedger()  # the shared store (Redis in the worker)
    first = LedgerBudget(ledger, BudgetLimits(run_tokens=100))
    first.charge(run(epoch=1), tokens(80))
    resumed = LedgerBudget(ledger, BudgetLimits(run_tokens=100))  # another worker process
    resumed.check(run(epoch=2))
    with pytest.raises(BudgetExceeded, match="run used 110 tokens"):
        resumed.charge(run(epoch=2), tokens(30))


def test_utc_day() -> None:
    assert utc_day(0) == "1970-01-01"
