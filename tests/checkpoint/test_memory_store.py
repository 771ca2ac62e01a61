"""MemoryStore specifics: expiry follows the injected clock (no sleeping)."""

from __future__ import annotations

from executus_worker.checkpoint.memory import MemoryStore
from executus_worker.checkpoint.store import ClaimStatus, RenewStatus
from executus_worker.core.models import RunStatus

from .conformance import NOW, msgs, request
from .conftest import FakeClock


def test_lease_expires_on_the_store_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.register(request(), run_id="r1", queue="q", now=NOW)
    first = store.claim("r1", owner="w1", lease_ttl_s=10, max_attempts=5, now=NOW)
    clock.advance(9.9)
    assert store.claim("r1", owner="w2", lease_ttl_s=10, max_attempts=5, now=NOW).status == "busy"
    assert store.renew("r1", fence=first.fence, lease_ttl_s=10) is RenewStatus.OK
    clock.advance(10)
    second = store.claim("r1", owner="w2", lease_ttl_s=10, max_attempts=5, now=NOW)
    assert second.status is ClaimStatus.CLAIMED and second.epoch == first.epoch + 1


def test_finished_runs_expire_after_the_result_ttl() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.register(request(), run_id="r1", queue="q", now=NOW)
    epoch = store.claim("r1", owner="w", lease_ttl_s=10, max_attempts=5, now=NOW).fence
    store.finish(
        "r1", fence=epoch, status=RunStatus.COMPLETED, output=1, error=None, base_len=0,
        new_messages=msgs(2), now=NOW, result_ttl_s=60,
    )  # fmt: skip
    clock.advance(59)
    assert store.transcript("r1") == msgs(2)
    clock.advance(1)
    assert store.get("r1") is None
    assert store.list_runs() == []
    store.register(request(), run_id="r1", queue="q", now=NOW + 100)
    assert store.transcript("r1") == []
