"""The main process's heartbeat file, and the check ``executus-worker health`` makes of it.

A daemon thread of the worker's main process rewrites the file every ``health_interval_s``
(write to a temporary file, then rename: a reader never sees half a file). The check reads the
file and nothing else -- no broker or Redis round trip -- so it is safe as a Kubernetes
liveness probe: a Redis outage must not get every worker restarted, it is not theirs to fix.

The file says ``starting`` (before the broker connection), ``ready``, or ``draining`` (warm
shutdown under way: still alive, still finishing its steps). It is removed at a clean exit.
A stalled main process (SIGSTOP, a wedged interpreter) stops writing; a killed one leaves a
file naming a pid that is gone. Both read as unhealthy. Under systemd the same thread feeds
the service watchdog (``sdnotify.py``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from executus_worker.observability import sdnotify
from executus_worker.observability.procs import pid_alive

log = logging.getLogger(__name__)

STATES = ("starting", "ready", "draining")
# What systemd hears when the thread sees the state change (Type=notify units).
_SD_STATE = {"ready": "READY=1", "draining": "STOPPING=1"}


class HealthBeacon:
    """Keeps ``path`` fresh from a daemon thread until ``stop()``."""

    def __init__(
        self,
        path: Path,
        *,
        interval_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._interval_s = interval_s
        self._clock = clock
        self._state = "starting"
        self._started_at = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._told_systemd: str | None = None

    def set_state(self, state: str) -> None:
        """Signal-safe: an attribute write; the thread writes the file on its next tick."""
        self._state = state

    def write(self) -> None:
        """One write (the thread's body; tests call it directly)."""
        body = {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "state": self._state,
            "updated_at": self._clock(),
            "started_at": self._started_at,
            "interval_s": self._interval_s,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.path)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._write_logged()
        self._thread = threading.Thread(target=self._run, name="executus-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval_s + 1)
        try:
            # Only our own file: another process may have taken the path over since.
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._write_logged()

    def _write_logged(self) -> None:
        try:
            self.write()
        except OSError as exc:  # a full or read-only disk must not end the worker
            log.warning("health file %s not written: %s", self.path, exc)
        state = self._state
        if state != self._told_systemd and state in _SD_STATE:
            sdnotify.notify(_SD_STATE[state])
            self._told_systemd = state
        sdnotify.notify("WATCHDOG=1")


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    detail: str
    state: str | None = None
    age_s: float | None = None
    pid: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "healthy": self.healthy,
            "detail": self.detail,
            "state": self.state,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "pid": self.pid,
        }


def check(
    path: Path,
    *,
    stale_s: float,
    require_ready: bool = False,
    now: float | None = None,
    alive: Callable[[int], bool] = pid_alive,
) -> HealthReport:
    """Read the heartbeat file and judge it; never raises for a bad or missing file."""
    beat = read(path)
    if isinstance(beat, HealthReport):
        return beat
    state, pid, updated, hostname = beat
    age_s = (time.time() if now is None else now) - updated
    problem = None
    if age_s > stale_s:
        problem = f"heartbeat {age_s:.1f}s old (stale after {stale_s:g}s): stalled?"
    # Same host (the probe runs in the worker's container): a pid that is gone means the
    # worker died after its last write.
    elif hostname == socket.gethostname() and not alive(pid):
        problem = f"worker pid {pid} is not running"
    elif require_ready and state != "ready":
        problem = f"worker is {state}, not ready"
    detail = problem or f"{state}, heartbeat {age_s:.1f}s old (pid {pid})"
    return HealthReport(problem is None, detail, state=state, age_s=age_s, pid=pid)


def read(path: Path) -> tuple[str, int, float, str | None] | HealthReport:
    """(state, pid, updated_at, hostname) from the file, or the report of why not."""
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return HealthReport(False, f"no heartbeat file at {path}: is the worker running?")
    except (OSError, ValueError) as exc:
        return HealthReport(False, f"heartbeat file {path} unreadable: {exc}")
    if not isinstance(body, dict):
        return HealthReport(False, f"heartbeat file {path} is not a JSON object")
    state, pid, updated = body.get("state"), body.get("pid"), body.get("updated_at")
    if not isinstance(pid, int) or not isinstance(updated, int | float) or state not in STATES:
        return HealthReport(False, f"heartbeat file {path} lacks pid, state or updated_at")
    hostname = body.get("hostname")
    return str(state), pid, float(updated), hostname if isinstance(hostname, str) else None
