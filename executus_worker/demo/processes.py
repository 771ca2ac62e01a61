"""The processes the demo starts -- workers and beat -- each stopped by its pid, and named.

Every child runs in its own session, so the terminal's Ctrl-C reaches only the demo, which
then stops each child exactly once (SIGTERM, Celery's warm shutdown; SIGKILL only if it is
still there after a grace period). Nothing is ever signalled by name or process group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CELERY = [sys.executable, "-m", "celery", "-A", "executus_worker.worker"]
BEAT_SCHEDULER = "beat.scheduler:ExecutusScheduler"
STOP_GRACE_S = 15.0


@dataclass
class Child:
    name: str  # "A", "B", "A2", "beat"
    kind: str  # the pool ("prefork", "threads") or "beat"
    proc: subprocess.Popen[bytes]
    log: Path
    signalled: str | None = None  # what the demo did to it: "SIGTERM", "SIGKILL", "stop"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"

    def tail(self, lines: int = 12) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Fleet:
    """The demo's children, and who owns what (an owner is ``host:pid`` of a process)."""

    workdir: Path
    env: Mapping[str, str]
    queue: str
    children: list[Child] = field(default_factory=list)
    _labels: dict[int, str] = field(default_factory=dict)

    def start_worker(self, name: str, pool: str, concurrency: int = 2) -> Child:
        argv = [
            *CELERY, "worker", "--pool", pool, "-c", str(concurrency), "-Q", self.queue,
            "-n", f"{name}-{self.queue}@%h", "--loglevel", "WARNING",
            # No cluster chatter with other workers that may share this Redis (and no
            # mingle wait at start).
            "--without-mingle", "--without-gossip", "--without-heartbeat",
        ]  # fmt: skip
        return self._spawn(name, pool, argv)

    def start_beat(self) -> Child:
        argv = [*CELERY, "beat", "--scheduler", BEAT_SCHEDULER, "--loglevel", "WARNING"]
        return self._spawn("beat", "beat", argv)

    def _spawn(self, name: str, kind: str, argv: list[str]) -> Child:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as sink:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                argv,
                env=dict(self.env),
                cwd=self.workdir,  # anything Celery writes to its cwd goes away with it
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, kind, proc, log)
        self.children.append(child)
        return child

    def signal(self, child: Child, signum: signal.Signals) -> None:
        child.signalled = signum.name
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)

    def died_unasked(self) -> Child | None:
        """A child that exited although the demo did not signal it."""
        for child in self.children:
            if child.signalled is None and child.proc.poll() is not None:
                return child
        return None

    def stop_all(self) -> list[str]:
        """SIGTERM every live child, wait, SIGKILL stragglers; returns what happened."""
        done = []
        live = [c for c in self.children if c.proc.poll() is None]
        for child in live:
            child.signalled = child.signalled or "stop"
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in live:
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
                done.append(f"stopped {child.label}, pid {child.pid}")
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                child.proc.wait(10)
                done.append(f"killed {child.label}, pid {child.pid} (ignored SIGTERM)")
        return done

    # -- naming owners ------------------------------------------------------------------

    def label_pid(self, pid: int) -> str:
        """``A (prefork)`` for a worker's main pid, ``A (prefork) child 123`` for its child."""
        if pid not in self._labels:
            for child in self.children:
                if child.pid == pid:
                    self._labels[pid] = child.label
                elif child.pid == _parent_of(pid):
                    self._labels[pid] = f"{child.label} child {pid}"
        return self._labels.get(pid, f"pid {pid}")

    def label_owner(self, owner: str) -> str:
        """An owner is ``host:pid`` or ``host:pid:<boot>.<pidns>.<start>`` (worker.identity)."""
        parts = owner.split(":")
        return self.label_pid(int(parts[1])) if len(parts) > 1 and parts[1].isdigit() else owner

    def worker_of(self, owner: str | None) -> Child | None:
        if not owner:
            return None
        label = self.label_owner(owner)
        return next((c for c in self.children if label.startswith(c.label)), None)


def _parent_of(pid: int) -> int | None:
    """The parent pid from /proc (Linux); None elsewhere or once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may contain spaces.
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else None
