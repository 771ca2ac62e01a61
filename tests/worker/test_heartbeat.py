"""Leases and heartbeats: what an owner knows about its lease, the guard before model and tool
calls, one pipelined renewal per process, and the cancel flag / ownership loss on the token."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import Fence, RenewStatus
from executus_worker.core.models import RunRequest
from executus_worker.core.stop import OwnershipLost, ShutdownRequested, StopReason, StopToken
from executus_worker.errors import StoreError
from executus_worker.worker.heartbeat import Heartbeats, Lease

TTL = 3.0
MARGIN = 1.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class CountingStore(MemoryStore):
    """Counts round trips; can fail every renewal."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.round_trips: list[list[str]] = []
        self.down = False

    def renew_many(
        self, leases: Sequence[tuple[str, Fence]], *, lease_ttl_s: float
    ) -> list[RenewStatus | StoreError]:
        self.round_trips.append([run_id for run_id, _ in leases])
        if self.down:
            raise StoreError("redis down")
        return super().renew_many(leases, lease_ttl_s=lease_ttl_s)


def claimed(store: MemoryStore, clock: Clock, run_id: str = "r1") -> Fence:
    store.register(RunRequest(agent="demo.counter"), run_id=run_id, queue="q", now=clock())
    claim = store.claim(run_id, owner="me:1", lease_ttl_s=TTL, max_attempts=5, now=clock())
    assert claim.fence is not None
    return claim.fence


def lease(fence: Fence, token: StopToken, clock: Clock, run_id: str = "r1") -> Lease:
    held = Lease(
        run_id=run_id, fence=fence, lease_ttl_s=TTL, margin_s=MARGIN, stop=token,
        sent_at=clock(), monotonic=clock,
    )  # fmt: skip
    token.guard = held.ensure
    return held


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> CountingStore:
    return CountingStore(clock)


def test_validity_is_measured_from_when_the_renewal_was_sent(
    store: CountingStore, clock: Clock
) -> None:
    """The bound starts at the *send* time: a renewal whose reply came late does not earn the
    time it spent in flight."""
    held = lease(claimed(store, clock), StopToken(), clock)
    assert held.remaining() == TTL
    clock.t += 1.5
    held.renewed(RenewStatus.OK, sent_at=clock.t - 1.0)  # sent 1 s before the reply arrived
    assert held.remaining() == pytest.approx(TTL - 1.0)
    # An older, slower reply never shortens what a newer one established.
    held.renewed(RenewStatus.OK, sent_at=clock.t - 1.4)
    assert held.remaining() == pytest.approx(TTL - 1.0)


def test_a_tick_renews_the_lease_in_the_store(store: CountingStore, clock: Clock) -> None:
    token = StopToken()
    held = lease(claimed(store, clock), token, clock)
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=3600, monotonic=clock)
    with heartbeats.hold(held):
        clock.t += 2
        assert heartbeats.tick()
        clock.t += 2  # 4 s after the claim: expired without the renewal
        again = store.claim("r1", owner="other:2", lease_ttl_s=TTL, max_attempts=5, now=clock())
        assert again.status.value == "busy"
        assert held.remaining() == pytest.approx(TTL - 2)
    assert not token.requested()


def test_one_round_trip_renews_every_lease_of_the_process(
    store: CountingStore, clock: Clock
) -> None:
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=3600, monotonic=clock)
    a = lease(claimed(store, clock, "a"), StopToken(), clock, "a")
    b_token = StopToken()
    b = lease(Fence("not-the-claims", 1), b_token, clock, "b")
    claimed(store, clock, "b")
    with heartbeats.hold(a), heartbeats.hold(b):
        heartbeats.tick()
        heartbeats.tick()
    heartbeats.tick()  # nothing held: no round trip
    assert store.round_trips == [["a", "b"], ["a"]]  # b was lost on the first; none after exit
    assert b.lost and b_token.reason() is StopReason.LOST_OWNERSHIP


def test_the_durable_cancel_flag_reaches_the_run_token(store: CountingStore, clock: Clock) -> None:
    token = StopToken()
    held = lease(claimed(store, clock), token, clock)
    store.request_cancel("r1", now=clock())
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=3600, monotonic=clock)
    with heartbeats.hold(held):
        heartbeats.tick()
    assert token.reason() is StopReason.CANCEL


def test_the_guard_passes_while_the_margin_holds(store: CountingStore, clock: Clock) -> None:
    token = StopToken()
    lease(claimed(store, clock), token, clock)
    clock.t += TTL - MARGIN  # exactly the margin left
    token.ensure_owner("model call")


def _guard_in_thread(token: StopToken) -> tuple[threading.Thread, list[BaseException | None]]:
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            token.ensure_owner("tool call send_email")
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_the_guard_pauses_without_a_renewal_and_resumes_after_one(
    store: CountingStore, clock: Clock
) -> None:
    """Renewals fail (Redis down, a partition): the run neither steps on nor stops; it waits,
    and continues as soon as a renewal succeeds."""
    token = StopToken()
    held = lease(claimed(store, clock), token, clock)
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=3600, monotonic=clock)
    with heartbeats.hold(held):
        store.down = True
        clock.t += TTL - MARGIN + 0.01
        assert not heartbeats.tick()
        thread, result = _guard_in_thread(token)
        time.sleep(0.3)
        assert result == [] and thread.is_alive()  # paused
        assert not token.requested()  # not stopped: an outage is no reason to give up
        store.down = False
        assert heartbeats.tick()
        thread.join(5)
    assert result == [None]


def test_the_guard_stops_a_paused_run_whose_lease_was_taken(
    store: CountingStore, clock: Clock
) -> None:
    token = StopToken()
    held = lease(claimed(store, clock), token, clock)
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=3600, monotonic=clock)
    with heartbeats.hold(held):
        clock.t += TTL + 1  # stalled past the lease; another worker took the run
        store.claim("r1", owner="other:2", lease_ttl_s=TTL, max_attempts=5, now=clock())
        thread, result = _guard_in_thread(token)  # wakes the renewal thread, which learns it
        thread.join(5)
    assert len(result) == 1 and isinstance(result[0], OwnershipLost)
    assert token.reason() is StopReason.LOST_OWNERSHIP


def test_a_shutdown_ends_the_pause(store: CountingStore, clock: Clock) -> None:
    drain = StopToken()
    token = StopToken(parents=[drain])
    lease(claimed(store, clock), token, clock)
    clock.t += TTL  # nothing certain left
    thread, result = _guard_in_thread(token)
    time.sleep(0.1)
    drain.request(StopReason.SHUTDOWN)
    thread.join(5)
    assert len(result) == 1 and isinstance(result[0], ShutdownRequested)


def test_the_process_thread_renews_on_its_interval(store: CountingStore, clock: Clock) -> None:
    calls: list[int] = []
    original = store.renew_many

    def counting(*args: Any, **kwargs: Any) -> list[RenewStatus | StoreError]:
        calls.append(os.getpid())
        return original(*args, **kwargs)

    store.renew_many = counting  # type: ignore[method-assign]
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=0.02)
    with heartbeats.hold(lease(claimed(store, clock), StopToken(), clock)):
        time.sleep(0.2)
    n = len(calls)
    assert n >= 3
    time.sleep(0.06)
    assert len(calls) <= n + 1  # released: at most a tick already in flight


def test_a_paused_run_wakes_the_renewal_thread(store: CountingStore, clock: Clock) -> None:
    """The guard does not wait out the interval: it asks for a renewal now."""
    token = StopToken()
    # An hour-long interval: the thread never ticks on its own here.
    heartbeats = Heartbeats(store, lease_ttl_s=TTL, interval_s=3600, monotonic=clock)
    held = lease(claimed(store, clock), token, clock)
    with heartbeats.hold(held):
        time.sleep(0.05)  # the thread is up and waiting its (hour-long) interval
        clock.t += TTL - MARGIN + 0.5
        thread, result = _guard_in_thread(token)
        thread.join(5)
    assert result == [None]
    assert store.round_trips  # the wake-up renewal
