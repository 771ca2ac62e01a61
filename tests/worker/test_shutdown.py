"""Warm-shutdown plumbing: the drain token, SIGUSR2 forwarding and SIGUSR1 escalation."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace

import pytest

from executus_worker.core.stop import ShutdownRequested, StopReason, StopToken
from executus_worker.worker.shutdown import (
    DRAIN_SIGNAL,
    ESCALATION_SIGNAL,
    DrainToken,
    ShutdownCoordinator,
)


def fake_worker(*pids: int) -> SimpleNamespace:
    procs = [SimpleNamespace(pid=pid) for pid in pids]
    return SimpleNamespace(pool=SimpleNamespace(_pool=SimpleNamespace(_pool=procs)))


@pytest.fixture
def restore_sigusr2():
    previous = signal.getsignal(DRAIN_SIGNAL)
    yield
    signal.signal(DRAIN_SIGNAL, previous)


def test_a_run_token_linked_to_the_drain_token_sees_a_shutdown() -> None:
    drain = DrainToken()
    run = StopToken(parents=[drain])
    assert not run.requested()
    drain.request(StopReason.SHUTDOWN, "warm shutdown")
    with pytest.raises(ShutdownRequested):
        run.check()


def test_a_cancel_on_the_run_outranks_a_concurrent_shutdown() -> None:
    drain = DrainToken()
    run = StopToken(parents=[drain])
    drain.request(StopReason.SHUTDOWN)
    run.request(StopReason.CANCEL)
    assert run.reason() is StopReason.CANCEL


def test_the_drain_signal_handler_never_deadlocks_against_a_checking_run(
    restore_sigusr2,
) -> None:
    """The handler runs on the thread that may be inside check(): it must take no lock."""
    coordinator = ShutdownCoordinator(grace_s=1)
    coordinator.on_process_init()
    run = StopToken(parents=[coordinator.drain])
    done = threading.Event()

    def fire() -> None:
        for _ in range(200):
            os.kill(os.getpid(), DRAIN_SIGNAL)
            time.sleep(0.0005)
        done.set()

    threading.Thread(target=fire, daemon=True).start()
    deadline = time.monotonic() + 10
    while not done.is_set() and time.monotonic() < deadline:
        run.requested()  # takes the run token's lock and reads the drain token
    assert done.is_set()
    assert run.reason() is StopReason.SHUTDOWN


def test_worker_init_ignores_sigusr2_before_children_fork(restore_sigusr2) -> None:
    ShutdownCoordinator(grace_s=1).on_worker_init(fake_worker())
    assert signal.getsignal(DRAIN_SIGNAL) is signal.SIG_IGN


def test_shutting_down_sets_the_drain_and_forwards_sigusr2_to_every_child(
    restore_sigusr2,
) -> None:
    sent: list[tuple[int, int]] = []
    coordinator = ShutdownCoordinator(grace_s=1, kill=lambda pid, sig: sent.append((pid, sig)))
    coordinator.on_worker_init(fake_worker(101, 102))
    coordinator.on_shutting_down("Warm")
    assert coordinator.drain.reason() is StopReason.SHUTDOWN
    assert sent == [(101, DRAIN_SIGNAL), (102, DRAIN_SIGNAL)]


def test_a_stop_without_a_signal_drains_and_forwards(restore_sigusr2) -> None:
    """`celery control shutdown` reaches us only as the worker stopping (no signal)."""
    sent: list[tuple[int, int]] = []
    coordinator = ShutdownCoordinator(grace_s=1, kill=lambda pid, sig: sent.append((pid, sig)))
    coordinator.on_worker_init(fake_worker(101, 102))
    coordinator.on_worker_stopping()
    assert coordinator.drain.reason() is StopReason.SHUTDOWN
    assert sent == [(101, DRAIN_SIGNAL), (102, DRAIN_SIGNAL)]


def test_a_stop_after_a_signal_forwards_nothing_twice(restore_sigusr2) -> None:
    sent: list[tuple[int, int]] = []
    coordinator = ShutdownCoordinator(grace_s=1, kill=lambda pid, sig: sent.append((pid, sig)))
    coordinator.on_worker_init(fake_worker(101))
    coordinator.on_shutting_down("Warm")
    coordinator.on_worker_stopping()
    assert sent == [(101, DRAIN_SIGNAL)]


def test_threads_and_solo_pools_have_no_children_to_signal(restore_sigusr2) -> None:
    sent: list[tuple[int, int]] = []
    coordinator = ShutdownCoordinator(grace_s=1, kill=lambda pid, sig: sent.append((pid, sig)))
    coordinator.on_worker_init(SimpleNamespace(pool=SimpleNamespace()))
    coordinator.on_shutting_down("Warm")
    assert sent == []
    assert coordinator.drain.requested()


def test_a_child_that_already_exited_is_skipped_quietly(restore_sigusr2) -> None:
    def kill(pid: int, sig: int) -> None:
        raise ProcessLookupError(pid)

    coordinator = ShutdownCoordinator(grace_s=1, kill=kill)
    coordinator.on_worker_init(fake_worker(101))
    coordinator.on_shutting_down("Warm")  # no exception


def test_escalation_signals_only_busy_children(restore_sigusr2) -> None:
    sent: list[tuple[int, int]] = []
    coordinator = ShutdownCoordinator(
        grace_s=0, kill=lambda pid, sig: sent.append((pid, sig)), busy_pids=lambda: {102, 999}
    )
    coordinator.on_worker_init(fake_worker(101, 102))
    assert coordinator.escalate() == [102]
    assert sent == [(102, ESCALATION_SIGNAL)]


def test_the_escalation_thread_fires_grace_seconds_after_the_drain(restore_sigusr2) -> None:
    sent: list[float] = []
    coordinator = ShutdownCoordinator(
        grace_s=0.2, kill=lambda pid, sig: sent.append(time.monotonic()), busy_pids=lambda: {7}
    )
    coordinator.on_worker_init(fake_worker(7))
    coordinator.start_escalation()
    time.sleep(0.1)
    assert sent == []
    started = time.monotonic()
    coordinator.drain.request(StopReason.SHUTDOWN)
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sent and 0.15 <= sent[0] - started < 2.0
