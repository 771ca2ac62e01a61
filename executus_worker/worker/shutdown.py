"""Warm shutdown for every pool: a process-wide drain token, SIGUSR2 forwarding, SIGUSR1 escalation.

Celery's warm shutdown waits for running tasks forever and tells them nothing: the
``worker_shutting_down`` signal fires in the MainProcess only, inside its SIGTERM handler, and
prefork children receive no signal at all (shared/research/celery-shutdown.md §1). A remote
``celery control shutdown`` (or Flower's button) sends no signal at all: it reaches us through
``bootsteps.drain_step``, as every warm stop does. Either way:

- the MainProcess receiver requests SHUTDOWN on the process-wide drain token (threads and solo
  pools run tasks in this process) and sends SIGUSR2 to every prefork child, whose handler --
  installed at ``worker_process_init`` -- requests SHUTDOWN on the child's copy of the token;
- every run's token is linked to the drain token, so the run stops at its next step boundary,
  the executor force-flushes and marks it interrupted, and the task returns normally;
- a step longer than ``shutdown_grace_s`` is cut short on prefork by SIGUSR1 (billiard raises
  ``SoftTimeLimitExceeded`` inside the task; the executor classifies an exception raised while
  SHUTDOWN is requested as an interruption). Threads and solo cannot be interrupted mid-step.

Celery's "soft shutdown" is deliberately not used: it blocks inside the signal handler, never
tells the task, and fails it on threads/solo (research §2). A cold shutdown (SIGQUIT) kills the
tasks; their leases expire and recovery takes over.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from celery.worker import state

from executus_worker.core.stop import StopReason, StopToken

log = logging.getLogger(__name__)

# billiard's soft-time-limit signal: raises SoftTimeLimitExceeded inside the child's task.
ESCALATION_SIGNAL = signal.SIGUSR1
# Free in prefork children (billiard only claims it with sigprotection); its default action
# terminates the process, hence SIG_IGN in the parent before any fork.
DRAIN_SIGNAL = signal.SIGUSR2
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class DrainToken(StopToken):
    """The process-wide drain token, set from signal handlers (``StopToken.request`` is
    signal-safe: it takes no lock). Call ``wait`` on it from non-main threads only: the
    handler runs on the main thread and sets the event.
    """

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until drained (or the timeout); ``None`` waits forever."""
        return self._event.wait(timeout_s)


def _default_busy_pids() -> set[int]:
    """Pids of prefork children running a task right now (MainProcess bookkeeping)."""
    for _ in range(3):
        try:
            requests = list(state.active_requests)
        except RuntimeError:  # "set changed size during iteration": the consumer thread moved
            continue
        return {pid for pid in (r.worker_pid for r in requests) if isinstance(pid, int)}
    return set()


class ShutdownCoordinator:
    """Hooks for the Celery worker signals; holds the drain token every run links to.

    Created in the MainProcess before the pool forks, so prefork children inherit the same
    object (and their own copy of the token, which their SIGUSR2 handler sets).
    """

    def __init__(
        self,
        *,
        grace_s: float,
        drain: DrainToken | None = None,
        kill: Callable[[int, int], None] = os.kill,
        busy_pids: Callable[[], set[int]] = _default_busy_pids,
    ) -> None:
        self.drain = drain or DrainToken()
        self._grace_s = grace_s
        self._kill = kill
        self._busy_pids = busy_pids
        self._worker: Any = None  # celery WorkController; its pool exists only after start
        self._escalation: threading.Thread | None = None
        self._main_pid = os.getpid()

    # -- MainProcess ---------------------------------------------------------------------

    def on_worker_init(self, worker: Any) -> None:
        """``worker_init`` (MainProcess, before the pool forks)."""
        self._worker = worker
        self._main_pid = os.getpid()
        # A SIGUSR2 racing a child's start-up (before its handler is installed) must be
        # ignored, not kill the child: children inherit this disposition across fork.
        signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)

    def on_shutting_down(self, how: str) -> None:
        """``worker_shutting_down``: runs inside the MainProcess signal handler -- never block.

        With solo this runs on the task's own thread, between two of its bytecodes.
        """
        self.drain.request(StopReason.SHUTDOWN, f"{how.lower()} shutdown")
        for pid in self.child_pids():
            self._signal(pid, DRAIN_SIGNAL)

    def on_worker_stopping(self) -> None:
        """Celery is stopping the worker (``bootsteps.drain_step``), whatever asked it to:
        ``celery control shutdown``, Flower's button, an unrecoverable error -- or a signal,
        whose handler has drained already. Runs in the MainProcess before the pool is joined."""
        if self.drain.requested():
            return
        log.warning("worker stopping: every run stops at its next step boundary")
        self.on_shutting_down("Warm")

    def child_pids(self) -> list[int]:
        """Live prefork children (empty for threads and solo pools)."""
        pool = getattr(getattr(self._worker, "pool", None), "_pool", None)
        procs = getattr(pool, "_pool", None) or []
        own = os.getpid()
        pids = []
        for proc in list(procs):
            pid = getattr(proc, "pid", None)
            if isinstance(pid, int) and pid != own:
                pids.append(pid)
        return pids

    def start_escalation(self) -> None:
        """Start the (daemon) thread that SIGUSR1s busy children ``grace_s`` after a drain."""
        if self._escalation is not None:
            return
        self._escalation = threading.Thread(
            target=self._escalate_after_grace, name="executus-escalation", daemon=True
        )
        self._escalation.start()

    def escalate(self) -> list[int]:
        """Cut the current step short in every busy prefork child. Returns the pids signalled.

        Only children both busy and ours are signalled: SoftTimeLimitExceeded raised in an
        idle child's pool loop would kill it for nothing.
        """
        targets = sorted(set(self.child_pids()) & self._busy_pids())
        for pid in targets:
            self._signal(pid, ESCALATION_SIGNAL)
        if targets:
            log.warning(
                "shutdown grace of %.1fs over: interrupting the step in children %s",
                self._grace_s,
                targets,
            )
        return targets

    def _escalate_after_grace(self) -> None:
        self.drain.wait()
        # Waiting the grace on a fresh Event keeps this thread off the signal-handler path.
        threading.Event().wait(self._grace_s)
        self.escalate()

    def _signal(self, pid: int, signum: int) -> None:
        # The child may have exited between listing and signalling: nothing to do then.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self._kill(pid, signum)

    # -- every process that runs tasks -----------------------------------------------------

    def on_process_init(self) -> None:
        """``worker_process_init``: each prefork child (and the MainProcess for solo)."""
        signal.signal(DRAIN_SIGNAL, self._on_drain_signal)
        if self._worker is not None and os.getpid() != self._main_pid:
            _drain_when_orphaned(self._main_pid)

    def _on_drain_signal(self, signum: int, frame: FrameType | None) -> None:
        self.drain.request(StopReason.SHUTDOWN, "warm shutdown (forwarded)")


def _drain_when_orphaned(parent: int) -> None:
    """A prefork child whose MainProcess died (SIGKILL, OOM) must not run on unsupervised: it
    could never ack its message, and nobody would stop it at the next deploy. The kernel sends
    it DRAIN_SIGNAL when the parent dies, so its run stops at the next step boundary and is
    left ``interrupted`` for another worker to resume -- a clean stop, not a crash."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(DRAIN_SIGNAL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError) as exc:  # not Linux: no parent-death signal
        log.warning("cannot watch for the worker's main process dying: %s", exc)
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), DRAIN_SIGNAL)
