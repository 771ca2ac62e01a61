"""Who owns a run, precisely enough to prove later that the owner is gone.

A lease names its owner ``<hostname>:<pid>:<boot>.<pidns>.<start>``: the host, the process,
and three facts that make the pid unambiguous on Linux -- the kernel's boot id (first 8 hex
digits), the inode of the process's pid namespace, and the process's start time in clock ticks
since boot (``/proc/<pid>/stat`` field 22).

A worker that boots can then take back, at once, the runs of owners that are *provably* dead
instead of waiting for their leases to expire (``EXECUTUS_LEASE_TTL_S``, 30 s by default):
an owner is provably dead only when it ran on this very kernel (same hostname, same boot id)
in this very pid namespace, and its pid no longer exists or now belongs to a process that
started at another time. Anything else -- another host, a container with its own pid
namespace, a rebooted host whose hostname was reused, a non-Linux system -- is not provable
from here, and recovery stays lease-bound. A wrong "dead" would mean two owners, so every
doubt answers "alive".
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

_PROC = Path("/proc")


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return str(os.stat(_PROC / "self/ns/pid").st_ino)
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in ticks); None if there is no such process
    or it is dead: a zombie (state Z) whose parent never reaps it -- e.g. a prefork child
    orphaned by a SIGKILLed main process in a container whose init does not reap -- still
    has a /proc entry, but runs nothing."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': fields follow the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if not fields or fields[0] in {"Z", "X", "x"}:
        return None
    return fields[19] if len(fields) > 19 else None


@functools.cache
def _host_facts() -> tuple[str | None, str | None]:
    # Constant for the life of the kernel and of the namespace: read once per process.
    return _boot_id(), _pid_namespace()


# This process's owner string by pid: a process's start time never changes, and reading it
# from /proc on every claim was ~0.1 ms of a run's overhead. Keyed by pid so a forked prefork
# child computes its own.
_OWN: dict[int, str] = {}


def process_owner(pid: int | None = None) -> str:
    """The owner string for a process (this one by default; a prefork child has its own)."""
    own = os.getpid()
    pid = own if pid is None else pid
    if pid == own and (known := _OWN.get(pid)) is not None:
        return known
    host = socket.gethostname()
    boot, pidns = _host_facts()
    start = _start_time(pid)
    if boot is None or pidns is None or start is None:
        return f"{host}:{pid}"  # not Linux: nobody can prove this owner dead; leases decide
    owner = f"{host}:{pid}:{boot}.{pidns}.{start}"
    if pid == own:
        _OWN[pid] = owner
    return owner


def provably_dead(owner: str) -> bool:
    """True only if ``owner`` ran on this kernel, in this pid namespace, and is gone."""
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    facts = parts[2].split(".")
    boot, pidns = _host_facts()
    if len(facts) != 3 or boot is None or pidns is None or facts[:2] != [boot, pidns]:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    now = _start_time(pid)
    return now is None or now != facts[2]
