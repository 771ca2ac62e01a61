"""State rows outlive their jobs only for ``STATE_TTL_S``: beats keep the rows they schedule.

A job deleted from the schedule file leaves no command behind to delete its row, so instead
every row expires unless some beat keeps it: each beat pushes the expiry of the rows of the
jobs in its catalog out once per ``refresh_s`` (a pipelined EXPIRE per job, hourly), so a
removed job's row disappears about ``STATE_TTL_S`` after the last beat stopped seeing it.
Rows written before rows expired have no TTL; one bounded SCAN step per tick finds them once
per process and gives them one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from executus_worker.schedules.store import STATE_TTL_S, ScheduleStore

DEFAULT_REFRESH_S = 3600.0


class StateRetention:
    def __init__(
        self,
        store: ScheduleStore,
        *,
        clock: Callable[[], float],
        ttl_s: int = STATE_TTL_S,
        refresh_s: float = DEFAULT_REFRESH_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self.ttl_s = ttl_s
        self.refresh_s = refresh_s
        self._kept_at: dict[str, float] = {}  # job name -> when this process last kept it
        self._scan_cursor: int | None = 0  # None once the whole keyspace has been walked
        self.expired_unkept = 0

    def maintain(self, names: Iterable[str]) -> None:
        """Keep the rows of ``names`` (the jobs this beat schedules); one scan step."""
        now = self._clock()
        live = set(names)
        # A name not kept recently, including one whose row appeared since (EXPIRE on a
        # missing key does nothing, so such a name is tried again on the next tick).
        kept_at = self._kept_at
        due = [n for n in sorted(live) if n not in kept_at or now - kept_at[n] >= self.refresh_s]
        self._kept_at = {n: t for n, t in self._kept_at.items() if n in live}
        if due:
            for name in self._store.keep_states(due, ttl_s=self.ttl_s):
                self._kept_at[name] = now
        if self._scan_cursor is not None:
            cursor, expired = self._store.expire_unkept_states(self._scan_cursor, ttl_s=self.ttl_s)
            self.expired_unkept += expired
            self._scan_cursor = cursor or None
