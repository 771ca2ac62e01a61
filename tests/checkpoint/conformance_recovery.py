"""Conformance spec, part two: leases, cancel, listing and bad bytes."""

from __future__ import annotations

import pytest

from executus_worker.checkpoint.store import ClaimStatus, Fence, RenewStatus, RunStore
from executus_worker.core.models import CHECKPOINT_FORMAT_VERSION, RunStatus
from executus_worker.errors import (
    CorruptCheckpointError,
    RunNotFoundError,
    UnsupportedFormatError,
)

from .conformance import LEASE_S, NOW, claimed, finish, msgs, registered, save
from .conftest import Backend

# --------------------------------------------------------------------------- leases


def test_renew_extends_own_lease_and_reports_cancel(store: RunStore) -> None:
    """renew is OK for the owner, CANCEL once a cancel is requested, LOST for anyone else."""
    epoch = claimed(store, registered(store))
    assert store.renew("r1", fence=epoch, lease_ttl_s=LEASE_S) is RenewStatus.OK
    assert store.renew("r1", fence=Fence("not-mine", epoch.epoch), lease_ttl_s=LEASE_S) is (
        RenewStatus.LOST
    )
    assert store.renew("r1", fence=Fence.new(epoch.epoch + 1), lease_ttl_s=1) is RenewStatus.LOST
    store.request_cancel("r1", now=NOW)
    assert store.renew("r1", fence=epoch, lease_ttl_s=LEASE_S) is RenewStatus.CANCEL


def test_renew_takes_back_a_lapsed_lease_nobody_claimed(store: RunStore, backend: Backend) -> None:
    """An owner whose lease lapsed but whose epoch is still current gets its lease back."""
    epoch = claimed(store, registered(store))
    backend.expire_lease("r1")
    assert store.renew("r1", fence=epoch, lease_ttl_s=LEASE_S) is RenewStatus.OK
    result = store.claim("r1", owner="w2", lease_ttl_s=LEASE_S, max_attempts=5, now=NOW)
    assert result.status is ClaimStatus.BUSY


# --------------------------------------------------------------------------- cancel


def test_cancel_of_a_queued_run_is_terminal_at_once(store: RunStore) -> None:
    """Cancelling a queued run makes it cancelled immediately; a later claim gets GONE."""
    registered(store)
    record = store.request_cancel("r1", now=NOW + 1)
    assert record.status is RunStatus.CANCELLED and record.finished_at == NOW + 1
    assert store.claim("r1", owner="w", lease_ttl_s=1, max_attempts=5, now=NOW).status == "gone"
    assert store.list_runs(status=RunStatus.QUEUED) == []


def test_cancel_of_an_interrupted_run_deletes_its_checkpoint(store: RunStore) -> None:
    """Cancelling an interrupted run ends it and deletes its checkpoint, keeping the transcript."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(2))
    store.interrupt("r1", fence=epoch, now=NOW)
    assert store.request_cancel("r1", now=NOW).status is RunStatus.CANCELLED
    assert store.load_checkpoint("r1") is None
    assert store.transcript("r1") == msgs(2)


def test_cancel_of_a_running_run_sets_the_flag_only(store: RunStore) -> None:
    """A running run with a live owner only gets cancel_requested; the owner finishes it."""
    epoch = claimed(store, registered(store))
    record = store.request_cancel("r1", now=NOW)
    assert record.status is RunStatus.RUNNING and record.cancel_requested
    finish(store, "r1", epoch, RunStatus.CANCELLED)
    after = store.get("r1")
    assert after is not None and after.status is RunStatus.CANCELLED


def test_cancel_of_a_running_run_whose_owner_is_gone_ends_it(
    store: RunStore, backend: Backend
) -> None:
    """A running run with no live lease (its worker died) is cancelled at once."""
    claimed(store, registered(store))
    backend.expire_lease("r1")
    assert store.request_cancel("r1", now=NOW).status is RunStatus.CANCELLED


def test_cancel_of_a_finished_run_changes_nothing(store: RunStore) -> None:
    """Cancelling a completed run returns it unchanged; an unknown run raises."""
    epoch = claimed(store, registered(store))
    finish(store, "r1", epoch, RunStatus.COMPLETED, output="done")
    record = store.request_cancel("r1", now=NOW + 50)
    assert (record.status, record.output, record.cancel_requested) == ("completed", "done", False)
    with pytest.raises(RunNotFoundError):
        store.request_cancel("nope", now=NOW)


# --------------------------------------------------------------------------- listing


def test_list_runs_filters_by_status_newest_first(store: RunStore) -> None:
    """list_runs filters by status, returns newest first and honours the limit."""
    for i in range(5):
        registered(store, f"q{i}", now=NOW + i)
    epoch = claimed(store, registered(store, "c", now=NOW + 10))
    finish(store, "c", epoch, RunStatus.COMPLETED)
    queued = store.list_runs(status=RunStatus.QUEUED, limit=3)
    assert [r.run_id for r in queued] == ["q4", "q3", "q2"]
    assert [r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)] == ["c"]
    everything = store.list_runs()
    assert [r.run_id for r in everything] == ["c", "q4", "q3", "q2", "q1", "q0"]


def test_finished_runs_are_listed_by_finish_time(store: RunStore) -> None:
    """list_runs of a terminal status orders by finished_at, newest first."""
    early = claimed(store, registered(store, "early", now=NOW))
    late = claimed(store, registered(store, "late", now=NOW + 1))
    store.finish("late", fence=late, status=RunStatus.COMPLETED, output=None, error=None,
                 base_len=0, new_messages=[], now=NOW + 5, result_ttl_s=3_600)  # fmt: skip
    store.finish("early", fence=early, status=RunStatus.COMPLETED, output=None, error=None,
                 base_len=0, new_messages=[], now=NOW + 9, result_ttl_s=3_600)  # fmt: skip
    assert [r.run_id for r in store.list_runs(status=RunStatus.COMPLETED)] == ["early", "late"]


def test_list_runs_skips_an_unreadable_record(store: RunStore, backend: Backend) -> None:
    """One corrupt record does not break listing the others."""
    registered(store, "a")
    registered(store, "b", now=NOW + 1)
    backend.set_record_field("a", "status", "exploded")
    assert [r.run_id for r in store.list_runs()] == ["b"]


# --------------------------------------------------------------------------- bad bytes


def test_corrupt_record_raises_a_typed_error_naming_the_run(
    store: RunStore, backend: Backend
) -> None:
    """A record with undecodable fields raises CorruptCheckpointError naming the run."""
    registered(store, "bad-run")
    backend.set_record_field("bad-run", "request", "\x00garbage")
    with pytest.raises(CorruptCheckpointError, match="bad-run") as info:
        store.get("bad-run")
    assert info.value.run_id == "bad-run" and "rec" in info.value.detail


def test_corrupt_checkpoint_raises_a_typed_error_naming_run_and_key(
    store: RunStore, backend: Backend
) -> None:
    """Broken meta or a broken message raises CorruptCheckpointError naming run and key."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(3))
    backend.set_message("r1", 1, '{"role": "nobody"')
    with pytest.raises(CorruptCheckpointError, match="r1") as info:
        store.load_checkpoint("r1")
    assert "msgs" in info.value.detail
    save(store, "r1", epoch, 0, msgs(3))
    backend.set_meta_field("r1", "completed_phases", "[1, 2")
    with pytest.raises(CorruptCheckpointError, match="r1") as info:
        store.load_checkpoint("r1")
    assert "ckpt" in info.value.detail
    save(store, "r1", epoch, 0, msgs(3))
    backend.set_meta_field("r1", "msg_count", "4")
    with pytest.raises(CorruptCheckpointError, match="counts 4"):
        store.load_checkpoint("r1")


def test_newer_format_version_raises_unsupported_format(store: RunStore, backend: Backend) -> None:
    """A checkpoint written by a newer format version raises UnsupportedFormatError."""
    epoch = claimed(store, registered(store))
    save(store, "r1", epoch, 0, msgs(1))
    backend.set_meta_field("r1", "format_version", str(CHECKPOINT_FORMAT_VERSION + 1))
    with pytest.raises(UnsupportedFormatError, match="r1"):
        store.load_checkpoint("r1")


def test_running_leases_and_release_of_the_current_claim_only(
    store: RunStore,
) -> None:
    """running_leases pages through running runs; release_lease drops a lease only for the
    run's current claim (a stale fence releases nothing)."""
    for run_id in ("a", "b", "c"):
        registered(store, run_id)
    fa = claimed(store, "a", owner="wa")
    claimed(store, "b", owner="wb")
    page, cursor = store.running_leases(cursor=0, batch=2)
    rest, end = store.running_leases(cursor=cursor, batch=2)
    assert end == 0
    found = {(lease.run_id, lease.owner, lease.fence_token) for lease in page + rest}
    assert ("a", "wa", fa.token) in found and {x[0] for x in found} == {"a", "b"}
    assert not store.release_lease("a", fence_token="stale")
    assert store.release_lease("a", fence_token=fa.token)
    assert not store.release_lease("a", fence_token=fa.token)  # already released
    again = store.claim("a", owner="w2", lease_ttl_s=LEASE_S, max_attempts=5, now=NOW)
    assert again.status is ClaimStatus.CLAIMED
