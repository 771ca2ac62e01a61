"""Heartbeats: lease renewal, the durable cancel flag and ownership loss reach the run's token."""

from __future__ import annotations

import os
import time
from typing import Any

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import RenewStatus
from executus_worker.core.models import RunRequest
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.errors import StoreError
from executus_worker.worker.heartbeat import Heartbeats, Lease


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def claimed(clock: Clock, run_id: str = "r1") -> tuple[MemoryStore, int]:
    store = MemoryStore(clock=clock)
    store.register(RunRequest(agent="demo.counter"), run_id=run_id, queue="q", now=clock())
    claim = store.claim(run_id, owner="me:1", lease_ttl_s=3, max_attempts=5, now=clock())
    return store, claim.epoch


def lease(store: Any, epoch: int, token: StopToken, clock: Clock, run_id: str = "r1") -> Lease:
    return Lease(
        store, run_id=run_id, owner="me:1", epoch=epoch, lease_ttl_s=3, stop=token,
        monotonic=clock,
    )  # fmt: skip


def test_a_renewal_extends_the_lease_past_its_original_expiry() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    token = StopToken()
    held = lease(store, epoch, token, clock)
    clock.t += 2
    assert held.beat() is RenewStatus.OK
    clock.t += 2  # 4 s after the claim: expired without the renewal
    again = store.claim("r1", owner="other:2", lease_ttl_s=3, max_attempts=5, now=clock())
    assert again.status.value == "busy"
    assert not token.requested()


def test_a_durable_cancel_flag_requests_cancel_on_the_run_token() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    store.request_cancel("r1", now=clock())
    token = StopToken()
    assert lease(store, epoch, token, clock).beat() is RenewStatus.CANCEL
    assert token.reason() is StopReason.CANCEL


def test_a_newer_owner_makes_this_attempt_stop_as_lost() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    clock.t += 10  # our lease lapsed; someone else claimed the run
    store.claim("r1", owner="other:2", lease_ttl_s=3, max_attempts=5, now=clock())
    token = StopToken()
    held = lease(store, epoch, token, clock)
    assert held.beat() is RenewStatus.LOST
    assert held.lost
    assert token.reason() is StopReason.LOST_OWNERSHIP


class FlakyStore(MemoryStore):
    def renew(self, *args: Any, **kwargs: Any) -> RenewStatus:
        raise StoreError("redis down")


def test_renewal_failures_for_a_whole_lease_ttl_stop_the_attempt() -> None:
    clock = Clock()
    token = StopToken()
    held = lease(FlakyStore(clock=clock), 1, token, clock)
    clock.t += 1
    assert held.beat() is None
    assert not token.requested()  # one failed renewal is tolerated
    clock.t += 2.5
    assert held.beat() is None
    assert token.reason() is StopReason.LOST_OWNERSHIP


def test_one_tick_renews_every_held_lease_and_forgets_lost_ones() -> None:
    clock = Clock()
    store, epoch = claimed(clock, "a")
    store.register(RunRequest(agent="demo.counter"), run_id="b", queue="q", now=clock())
    store.claim("b", owner="me:1", lease_ttl_s=3, max_attempts=5, now=clock())
    renewed: list[str] = []
    original = store.renew

    def counting(run_id: str, **kwargs: Any) -> RenewStatus:
        renewed.append(run_id)
        return original(run_id, **kwargs)

    store.renew = counting  # type: ignore[method-assign]
    heartbeats = Heartbeats(interval_s=3600)  # the thread never ticks on its own here
    wrong_epoch = lease(store, 99, StopToken(), clock, "b")
    with heartbeats.hold(lease(store, epoch, StopToken(), clock, "a")):
        with heartbeats.hold(wrong_epoch):
            heartbeats.tick()
            heartbeats.tick()
        heartbeats.tick()
    heartbeats.tick()
    assert renewed == ["a", "b", "a", "a"]  # b was lost after one renewal; none after exit
    assert wrong_epoch.lost


def test_the_process_thread_renews_on_its_interval() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    calls: list[int] = []
    original = store.renew

    def counting(run_id: str, **kwargs: Any) -> RenewStatus:
        calls.append(os.getpid())
        return original(run_id, **kwargs)

    store.renew = counting  # type: ignore[method-assign]
    heartbeats = Heartbeats(interval_s=0.02)
    with heartbeats.hold(lease(store, epoch, StopToken(), clock)):
        time.sleep(0.2)
    n = len(calls)
    assert n >= 3
    time.sleep(0.06)
    assert len(calls) <= n + 1  # released: at most a tick already in flight
