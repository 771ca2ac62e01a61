"""The recovery sweep, run from inside the beat process every ``sweep_interval_s``.

Workers sweep too (a thread in each worker's main process); beat's sweep covers the fleet
while every worker is busy or down to one. Several sweepers at once are harmless: the sweep
takes a short scan lock to save work and the store moves each run back to ``queued`` with a
compare-and-set, so correctness never depends on who sweeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicSweep:
    """Calls ``sweep`` when due (at once on the first call). ``run_if_due`` never raises."""

    def __init__(
        self,
        sweep: Callable[[], object],
        *,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sweep = sweep
        self.interval_s = interval_s
        self._clock = clock
        self._next_at: float | None = None
        self.runs = 0
        self.failures = 0

    def run_if_due(self) -> float:
        """Sweep if the interval has passed; return the seconds until the next sweep."""
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            return self._next_at - now
        # Schedule from the start, so a slow sweep does not stretch the interval, and before
        # running, so a sweep that raises is retried one interval later, not in a tight loop.
        self._next_at = now + self.interval_s
        self.runs += 1
        try:
            self._sweep()
        except Exception:
            self.failures += 1
            log.exception("beat: recovery sweep failed; next try in %.0fs", self.interval_s)
        return max(self._next_at - self._clock(), 0.0)
