"""Owner identity: a restarted worker may take over only owners that are provably dead."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.core.models import RunRequest
from executus_worker.worker import identity
from executus_worker.worker.takeover import release_dead_owners

pytestmark = pytest.mark.skipif(
    identity.process_owner().count(":") != 2, reason="process identity needs Linux /proc"
)


def dead_owner() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = identity.process_owner(proc.pid)
    proc.wait()
    return owner


def test_a_live_process_is_not_dead() -> None:
    assert not identity.provably_dead(identity.process_owner())


def test_an_exited_process_on_this_kernel_is_provably_dead() -> None:
    assert identity.provably_dead(dead_owner())


def test_a_reused_pid_is_told_apart_by_its_start_time() -> None:
    host, pid, facts = identity.process_owner().split(":")
    boot, pidns, start = facts.split(".")
    assert identity.provably_dead(f"{host}:{pid}:{boot}.{pidns}.{int(start) + 1}")


@pytest.mark.parametrize(
    "change",
    ["another host", "another boot", "another pid namespace", "no facts", "garbage pid"],
)
def test_owners_that_cannot_be_judged_from_here_count_as_alive(change: str) -> None:
    host, pid, facts = dead_owner().split(":")
    boot, pidns, start = facts.split(".")
    owner = {
        "another host": f"not-{socket.gethostname()}:{pid}:{facts}",
        "another boot": f"{host}:{pid}:ffffffff.{pidns}.{start}",
        "another pid namespace": f"{host}:{pid}:{boot}.1.{start}",
        "no facts": f"{host}:{pid}",
        "garbage pid": f"{host}:x:{facts}",
    }[change]
    assert not identity.provably_dead(owner)


def test_boot_takeover_frees_only_the_runs_of_dead_owners() -> None:
    store = MemoryStore()
    for run_id, owner in [("dead", dead_owner()), ("alive", identity.process_owner())]:
        store.register(RunRequest(agent="demo.counter"), run_id=run_id, queue="q", now=1.0)
        store.claim(run_id, owner=owner, lease_ttl_s=600, max_attempts=5, now=1.0)
    assert release_dead_owners(store, batch=1) == 1
    # The dead owner's run can be claimed at once; the live one is still busy.
    assert store.claim("dead", owner="me", lease_ttl_s=60, max_attempts=5, now=2.0).fence
    busy = store.claim("alive", owner="me", lease_ttl_s=60, max_attempts=5, now=2.0)
    assert busy.status.value == "busy"


def test_a_zombie_is_dead() -> None:
    """An exited child nobody reaped keeps its /proc entry (state Z) but runs nothing."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = identity.process_owner(proc.pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.01)
    try:
        assert state == "Z"
        assert identity.provably_dead(owner)
    finally:
        proc.wait()
