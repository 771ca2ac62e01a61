"""Budget battery: caps tokens and cost per run attempt. The default charges nothing."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass

from executus_worker.core.models import RunInfo
from executus_worker.core.ports import Usage
from executus_worker.core.stop import BudgetExceeded

__all__ = ["BudgetExceeded", "TokenBudget"]


@dataclass
class _Spent:
    tokens: int = 0
    cost_usd: float = 0.0


class TokenBudget:
    """Fails a run once its model steps exceed ``max_tokens`` or ``max_cost_usd``.

    Spend is tracked per run in this process, so a resumed run starts a fresh count on its new
    worker: the cap bounds one attempt, not the run's lifetime (persist spend in the critic
    state if you need a lifetime cap).
    """

    def __init__(self, *, max_tokens: int | None = None, max_cost_usd: float | None = None) -> None:
        self._max_tokens = max_tokens
        self._max_cost_usd = max_cost_usd
        self._spent: dict[str, _Spent] = defaultdict(_Spent)
        self._lock = threading.Lock()

    def check(self, run: RunInfo) -> None:
        return None

    def charge(self, run: RunInfo, usage: Usage) -> None:
        with self._lock:
            spent = self._spent[run.run_id]
            spent.tokens += usage.input_tokens + usage.output_tokens
            spent.cost_usd += usage.cost_usd
            tokens, cost = spent.tokens, spent.cost_usd
        if self._max_tokens is not None and tokens > self._max_tokens:
            raise BudgetExceeded(f"run {run.run_id}: {tokens} tokens > {self._max_tokens}")
        if self._max_cost_usd is not None and cost > self._max_cost_usd:
            raise BudgetExceeded(f"run {run.run_id}: ${cost:.4f} > ${self._max_cost_usd:.4f}")

    def spent(self, run_id: str) -> tuple[int, float]:
        with self._lock:
            spent = self._spent.get(run_id, _Spent())
            return spent.tokens, spent.cost_usd

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._spent.pop(run_id, None)
