"""Stop token and the stop exceptions a run unwinds with.

Every stop derives from ``BaseException``, not ``Exception``: agent and tool code is full of
``except Exception:`` blocks, and a stop swallowed there means a run that keeps going after a
shutdown, a cancel or a fencing failure -- and, for shutdown, a checkpoint that is never flushed.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Sequence


class StopReason(enum.StrEnum):
    SHUTDOWN = "shutdown"  # warm shutdown: keep the checkpoint, status interrupted
    CANCEL = "cancel"  # a user cancelled: delete the checkpoint, status cancelled
    # The values of the two below are the failure reasons recorded on the run ("critic_kill:
    # <detail>"), so a user can tell a kill or a budget stop from a bug at a glance.
    CRITIC = "critic_kill"  # the watchdog killed the run: status failed, never recovered
    BUDGET = "budget_exceeded"  # the budget battery stopped the run: status failed
    LOST_OWNERSHIP = "lost_ownership"  # another owner holds the run: write nothing more


class RunStopped(BaseException):
    """Base of every stop. Derives from BaseException on purpose (see module docstring)."""

    reason: StopReason = StopReason.SHUTDOWN

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason.value)
        self.detail = detail


class ShutdownRequested(RunStopped):
    reason = StopReason.SHUTDOWN


class CancelRequested(RunStopped):
    reason = StopReason.CANCEL


class CriticKilled(RunStopped):
    reason = StopReason.CRITIC


class BudgetExceeded(RunStopped):
    """The run spent more tokens or money than a limit allows (raised by the budget battery).

    A stop, not an ``Exception``: the battery's one declared control exception, so the executor
    contains every other budget failure (a Redis blip) but lets this one end the run.
    """

    reason = StopReason.BUDGET


class OwnershipLost(RunStopped):
    """Raised when an epoch check fails: a newer claim exists, this owner must stop writing."""

    reason = StopReason.LOST_OWNERSHIP


_EXCEPTIONS: dict[StopReason, type[RunStopped]] = {
    StopReason.SHUTDOWN: ShutdownRequested,
    StopReason.CANCEL: CancelRequested,
    StopReason.CRITIC: CriticKilled,
    StopReason.BUDGET: BudgetExceeded,
    StopReason.LOST_OWNERSHIP: OwnershipLost,
}

# When several stops are requested, the most final one wins: a cancelled run must not be left
# "interrupted" just because a deploy happened at the same moment.
_PRIORITY = (
    StopReason.LOST_OWNERSHIP,
    StopReason.CANCEL,
    StopReason.CRITIC,
    StopReason.BUDGET,
    StopReason.SHUTDOWN,
)


def stop_exception(reason: StopReason, detail: str = "") -> RunStopped:
    return _EXCEPTIONS[reason](detail)


class StopToken:
    """A thread-safe set of stop requests, optionally linked to parent tokens.

    The worker keeps one process-wide drain token (set on warm shutdown) and links every run's
    token to it; the heartbeat thread requests CANCEL or LOST_OWNERSHIP on the run's own token.
    The run loop calls :meth:`check` at every step boundary.
    """

    def __init__(
        self,
        parents: Sequence[StopToken] = (),
        *,
        guard: Callable[[str], None] | None = None,
    ) -> None:
        self._parents = tuple(parents)
        # The owner's lease check (worker.heartbeat.Lease.ensure): returns when the lease is
        # certainly valid for at least its safety margin, blocks while that is unknown, raises
        # a RunStopped once it is lost or a stop arrives meanwhile.
        self.guard = guard
        # No lock, on purpose: ``request`` runs inside signal handlers (warm shutdown), on the
        # very thread that may be in ``check``. A non-reentrant lock held there would deadlock
        # the handler. ``dict.setdefault`` and ``dict(d)`` are single C calls: atomic under the
        # GIL and never interrupted by a Python-level signal handler.
        self._requested: dict[StopReason, str] = {}
        self._event = threading.Event()

    def request(self, reason: StopReason, detail: str = "") -> None:
        """Signal-safe. (The event wakes ``wait``ers; only wait from non-main threads.)"""
        self._requested.setdefault(reason, detail)
        self._event.set()

    def reason(self) -> StopReason | None:
        """The highest-priority stop requested here or on any parent, or None."""
        pending = self._collect()
        for reason in _PRIORITY:
            if reason in pending:
                return reason
        return None

    def requested(self) -> bool:
        return self.reason() is not None

    def check(self) -> None:
        """Raise the stop exception for the most final pending request, if any."""
        pending = self._collect()
        for reason in _PRIORITY:
            if reason in pending:
                raise stop_exception(reason, pending[reason])

    def ensure_owner(self, what: str) -> None:
        """Called before every model call and every tool call: side effects start only while
        this attempt certainly still owns the run (see ``guard``). A no-op without a guard."""
        if self.guard is not None:
            self.guard(what)

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s`` but wake early on a request to this token (not parents)."""
        return self._event.wait(timeout_s) or self.requested()

    def _collect(self) -> dict[StopReason, str]:
        pending = dict(self._requested)
        for parent in self._parents:
            for reason, detail in parent._collect().items():
                pending.setdefault(reason, detail)
        return pending
