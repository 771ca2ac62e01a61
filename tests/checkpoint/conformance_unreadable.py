"""Conformance, continued: what the store does with data this version cannot read -- a
checkpoint of a newer format is parked (kept, and claimed only by a worker that reads it), an
unreadable one is failed with the data kept, a request from a newer client stays readable."""

from __future__ import annotations

import json

import pytest

from executus_worker.checkpoint import memory, redis_store
from executus_worker.checkpoint.store import ClaimStatus, RunStore
from executus_worker.core.models import CHECKPOINT_FORMAT_VERSION, RunStatus
from executus_worker.core.stop import OwnershipLost
from executus_worker.errors import CorruptCheckpointError

from .conformance import NOW, TTL_S, claimed, finish, msgs, registered, request, save
from .conftest import Backend

NEWER = CHECKPOINT_FORMAT_VERSION + 1


def parked(store: RunStore, backend: Backend) -> list[str]:
    """r1 with 2 saved messages of a newer format, parked by this version; its stored bytes."""
    fence = claimed(store, registered(store))
    save(store, "r1", fence, 0, msgs(2), iteration=2)
    backend.set_meta_field("r1", "format_version", str(NEWER))
    store.park("r1", fence=fence, now=NOW + 4, reason="format 2: upgrade", needs_format=NEWER)
    return [m.content for m in store.transcript("r1")]


def test_park_releases_the_run_and_keeps_its_checkpoint(store: RunStore, backend: Backend) -> None:
    """park: interrupted with the reason and format, lease released, checkpoint untouched."""
    stored = parked(store, backend)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    assert (record.needs_format, record.last_reason) == (NEWER, "format 2: upgrade")
    assert stored == ["step 1", "step 2"]
    assert [m.content for m in store.transcript("r1")] == stored


def test_a_parked_run_is_deferred_by_older_claimers_without_a_write(
    store: RunStore, backend: Backend
) -> None:
    """A claimer that reads an older format gets DEFERRED and changes nothing."""
    parked(store, backend)
    before = store.get("r1")
    result = store.claim("r1", owner="old", lease_ttl_s=30, max_attempts=1, now=NOW + 9)
    assert result.status is ClaimStatus.DEFERRED and result.fence is None
    assert result.record is not None and result.record.needs_format == NEWER
    assert store.get("r1") == before


def test_a_parked_run_is_claimed_by_a_worker_that_reads_its_format(
    store: RunStore, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimer of the newer format claims it, and a park never counted as a failure."""
    parked(store, backend)
    for module in (memory, redis_store):
        monkeypatch.setattr(module, "CHECKPOINT_FORMAT_VERSION", NEWER)
    result = store.claim("r1", owner="new", lease_ttl_s=30, max_attempts=1, now=NOW + 9)
    assert result.status is ClaimStatus.CLAIMED and result.attempts == 2


def test_park_is_fenced(store: RunStore) -> None:
    """A stale owner cannot park a run it no longer holds."""
    old = claimed(store, registered(store))
    store.interrupt("r1", fence=old, now=NOW + 2)
    claimed(store, "r1", owner="w2")
    with pytest.raises(OwnershipLost):
        store.park("r1", fence=old, now=NOW + 3, reason="x", needs_format=NEWER)


def test_finish_keeping_the_checkpoint_leaves_it_as_stored(
    store: RunStore, backend: Backend
) -> None:
    """finish(keep_checkpoint=True) records the ending and deletes nothing it could not read."""
    first = claimed(store, registered(store))
    save(store, "r1", first, 0, msgs(3), iteration=3)
    store.interrupt("r1", fence=first, now=NOW + 2)
    backend.set_meta_field("r1", "msg_count", "9")
    fence = claimed(store, "r1", owner="w2")
    finish(store, "r1", fence, RunStatus.FAILED, error="unreadable", keep_checkpoint=True)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error == "unreadable"
    assert [m.content for m in store.transcript("r1")] == ["step 1", "step 2", "step 3"]
    with pytest.raises(CorruptCheckpointError, match="counts 9"):  # still there, unreadable
        store.load_checkpoint("r1")
    assert backend.keys_without_ttl() in (None, [])
    assert store.list_runs(status=RunStatus.FAILED)[0].run_id == "r1"


def test_a_request_from_a_newer_client_gives_a_readable_marked_record(
    store: RunStore, backend: Backend
) -> None:
    """A stored request with fields this version lacks still decodes, with request_error."""
    registered(store)
    newer = {**json.loads(request().to_json()), "run_id": "r1", "budget_usd": 2.5}
    backend.set_record_field("r1", "request", json.dumps(newer))
    record = store.get("r1")
    assert record is not None and record.request.agent == "demo.counter"
    assert record.request_error is not None and "budget_usd" in record.request_error
    claim = store.claim("r1", owner="w", lease_ttl_s=30, max_attempts=5, now=NOW + 1)
    assert claim.record is not None and claim.record.request_error == record.request_error
    assert [r.run_id for r in store.list_runs()] == ["r1"]


def test_a_rejected_registration_is_marked_never_runnable(store: RunStore) -> None:
    """register(rejected=...) records the reason as the record's request_error."""
    store.register(request(), run_id="r1", queue="q", now=NOW, rejected="bad message")
    record = store.get("r1")
    assert record is not None and record.request_error == "bad message"


def test_a_claim_of_a_record_that_does_not_decode_hands_out_the_claim(
    store: RunStore, backend: Backend
) -> None:
    """The claim is made before the record is decoded: it comes back with the problem and a
    fence that ends the run, instead of an exception that strands it."""
    registered(store)
    backend.set_record_field("r1", "created_at", "yesterday")
    result = store.claim("r1", owner="w", lease_ttl_s=30, max_attempts=5, now=NOW + 1)
    assert result.status is ClaimStatus.CLAIMED and result.record is None
    assert result.fence is not None and result.problem is not None
    assert "created_at" in result.problem
    store.finish(
        "r1", fence=result.fence, status=RunStatus.FAILED, output=None, error="bad record",
        base_len=0, new_messages=[], now=NOW + 2, result_ttl_s=TTL_S, keep_checkpoint=True,
    )  # fmt: skip
