"""Heartbeat: lease renewal, the durable cancel flag and ownership loss reach the run's token."""

from __future__ import annotations

import time

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import RenewStatus
from executus_worker.core.models import RunRequest
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.errors import StoreError
from executus_worker.worker.heartbeat import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def claimed(clock: Clock) -> tuple[MemoryStore, int]:
    store = MemoryStore(clock=clock)
    store.register(RunRequest(agent="demo.counter"), run_id="r1", queue="q", now=clock())
    claim = store.claim("r1", owner="me:1", lease_ttl_s=3, max_attempts=5, now=clock())
    return store, claim.epoch


def heartbeat(store, epoch: int, token: StopToken, clock: Clock, **kw) -> Heartbeat:
    return Heartbeat(
        store, run_id="r1", owner="me:1", epoch=epoch, lease_ttl_s=3, stop=token,
        monotonic=clock, **kw,
    )  # fmt: skip


def test_a_renewal_extends_the_lease_past_its_original_expiry() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    token = StopToken()
    beat = heartbeat(store, epoch, token, clock)
    clock.t += 2
    assert beat.beat() is RenewStatus.OK
    clock.t += 2  # 4 s after the claim: expired without the renewal
    again = store.claim("r1", owner="other:2", lease_ttl_s=3, max_attempts=5, now=clock())
    assert again.status.value == "busy"
    assert not token.requested()


def test_a_durable_cancel_flag_requests_cancel_on_the_run_token() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    store.request_cancel("r1", now=clock())
    token = StopToken()
    assert heartbeat(store, epoch, token, clock).beat() is RenewStatus.CANCEL
    assert token.reason() is StopReason.CANCEL


def test_a_newer_owner_makes_this_attempt_stop_as_lost() -> None:
    clock = Clock()
    store, epoch = claimed(clock)
    clock.t += 10  # our lease lapsed; someone else claimed the run
    store.claim("r1", owner="other:2", lease_ttl_s=3, max_attempts=5, now=clock())
    token = StopToken()
    assert heartbeat(store, epoch, token, clock).beat() is RenewStatus.LOST
    assert token.reason() is StopReason.LOST_OWNERSHIP


class FlakyStore(MemoryStore):
    def renew(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise StoreError("redis down")


def test_renewal_failures_for_a_whole_lease_ttl_stop_the_attempt() -> None:
    clock = Clock()
    token = StopToken()
    beat = heartbeat(FlakyStore(clock=clock), 1, token, clock)
    clock.t += 1
    assert beat.beat() is None
    assert not token.requested()  # one failed renewal is tolerated
    clock.t += 2.5
    assert beat.beat() is None
    assert token.reason() is StopReason.LOST_OWNERSHIP


def test_the_thread_renews_on_its_interval_and_stops_when_asked() -> None:
    store, epoch = claimed(Clock())
    calls: list[str] = []
    original = store.renew

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append("renew")
        return original(*args, **kwargs)

    store.renew = counting  # type: ignore[method-assign]
    beat = Heartbeat(
        store, run_id="r1", owner="me:1", epoch=epoch, lease_ttl_s=3, stop=StopToken(),
        interval_s=0.02,
    )  # fmt: skip
    with beat:
        time.sleep(0.2)
    n = len(calls)
    assert n >= 3
    time.sleep(0.06)
    assert len(calls) == n  # stopped
