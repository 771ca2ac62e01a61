"""Conformance spec, part three: the recovery sweep and its index.

A sweep looks only at runs that are due (store.py: running past its lease deadline, interrupted,
queued past its timeout and backoff), moves orphans back to ``queued`` once, and leaves the
healthy runs unread.
"""

from __future__ import annotations

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import RunStore
from executus_worker.core.models import RunRequest, RunStatus

from .conformance import LEASE_S, NOW, claimed, finish, registered, request
from .conftest import Backend

T = 900.0  # queued_timeout_s


def _sweep(store: RunStore, now: float, **kw: object) -> dict[str, RunStatus]:
    batch = store.sweep(now=now, queued_timeout_s=T, **kw)  # type: ignore[arg-type]
    return {r.run_id: r.previous_status for r in batch.requeued}


def _interrupted(store: RunStore, run_id: str, now: float = NOW) -> str:
    registered(store, run_id, now=now)
    store.interrupt(run_id, fence=claimed(store, run_id), now=now)
    return run_id


def test_sweep_requeues_interrupted_and_orphaned_runs_once(
    store: RunStore, backend: Backend
) -> None:
    """Interrupted runs and runs whose lease expired go back to queued, once."""
    _interrupted(store, "a")
    claimed(store, registered(store, "b"))
    backend.expire_lease("b")
    claimed(store, registered(store, "live"))
    registered(store, "fresh")
    at = NOW + 1 + LEASE_S + 1  # past the claims' lease deadlines
    batch = store.sweep(now=at, queued_timeout_s=T)
    assert {r.run_id: r.previous_status for r in batch.requeued} == {
        "a": RunStatus.INTERRUPTED,
        "b": RunStatus.RUNNING,
    }
    assert batch.errors == [] and batch.scanned == 3 and not batch.more  # not "fresh"
    sample = next(r for r in batch.requeued if r.run_id == "a")
    assert sample.queue == "executus"
    assert RunRequest.model_validate_json(sample.request_json) == request()
    for run_id in ("a", "b"):
        record = store.get(run_id)
        assert record is not None and record.status is RunStatus.QUEUED
        assert record.enqueued_at == at and record.owner is None
    live = store.get("live")
    assert live is not None and live.status is RunStatus.RUNNING
    again = store.sweep(now=at + 1, queued_timeout_s=T)
    assert (again.requeued, again.scanned) == ([], 0)


def test_a_sweep_looks_at_no_healthy_run(store: RunStore) -> None:
    """Live leases before their deadline and queued runs inside their timeout are not read."""
    for i in range(20):
        claimed(store, registered(store, f"run-{i}"))
        registered(store, f"queued-{i}")
    batch = store.sweep(now=NOW + LEASE_S / 2, queued_timeout_s=T)
    assert (batch.requeued, batch.errors, batch.scanned, batch.more) == ([], [], 0, False)


def test_renewals_postpone_the_sweep_of_a_running_run(store: RunStore, backend: Backend) -> None:
    """A renewal moves the run's recovery deadline to its new lease expiry."""
    fence = claimed(store, registered(store))  # deadline NOW + 1 + LEASE_S
    store.renew_many([("r1", fence)], lease_ttl_s=LEASE_S, now=NOW + 25)
    backend.expire_lease("r1")  # the owner dies right after renewing
    assert store.sweep(now=NOW + 40, queued_timeout_s=T).scanned == 0
    assert _sweep(store, NOW + 25 + LEASE_S) == {"r1": RunStatus.RUNNING}


def test_a_due_run_with_a_live_lease_is_only_rescheduled(store: RunStore) -> None:
    """A run found due whose lease is live is left alone and not looked at again soon."""
    fence = claimed(store, registered(store))
    batch = store.sweep(now=NOW + 40, queued_timeout_s=T)  # past the deadline it had
    assert (batch.requeued, batch.scanned) == ([], 1)
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.RUNNING
    assert store.renew("r1", fence=fence, lease_ttl_s=LEASE_S, now=NOW + 41) == "ok"
    assert store.sweep(now=NOW + 41, queued_timeout_s=T).scanned == 0


def test_a_queued_run_is_republished_with_exponential_backoff(store: RunStore) -> None:
    """A queued run nobody claims is re-published T, 3T, 7T, 15T ... after it was enqueued."""
    registered(store, now=NOW)
    published = []
    for k in range(1, 60):
        if _sweep(store, NOW + k * T / 2) == {"r1": RunStatus.QUEUED}:
            published.append(k * T / 2)
    assert published == [T, 3 * T, 7 * T, 15 * T]
    record = store.get("r1")
    assert record is not None and record.status is RunStatus.QUEUED
    assert record.enqueued_at == NOW + 15 * T


def test_a_claim_restarts_the_queued_backoff(store: RunStore) -> None:
    """After a claim, the next requeue of the run waits one queued timeout again."""
    registered(store, now=NOW)
    assert _sweep(store, NOW + T) and _sweep(store, NOW + 3 * T)  # backoff now at 4T
    fence = claimed(store)
    at = NOW + 3 * T + 10
    store.interrupt("r1", fence=fence, now=at)
    assert _sweep(store, at) == {"r1": RunStatus.INTERRUPTED}
    assert _sweep(store, at + T - 1) == {}
    assert _sweep(store, at + T) == {"r1": RunStatus.QUEUED}


def test_a_backlog_defers_republishing_but_only_for_a_while(store: RunStore) -> None:
    """While its broker queue holds messages a queued run is deferred, up to 4 T since its
    last publish; the backlog is asked once per queue."""
    registered(store, "a", now=NOW)
    store.register(request(), run_id="b", queue="other", now=NOW)
    asked: list[str] = []

    def backlog(queue: str) -> bool:
        asked.append(queue)
        return True

    for at in (NOW + T, NOW + 3 * T):
        batch = store.sweep(now=at, queued_timeout_s=T, backlogged=backlog)
        assert (batch.requeued, batch.deferred) == ([], 2)
    assert sorted(asked) == ["executus", "executus", "other", "other"]
    record = store.get("a")
    assert record is not None and record.enqueued_at == NOW  # nothing was published
    assert _sweep(store, NOW + 7 * T, backlogged=backlog) == {
        "a": RunStatus.QUEUED,
        "b": RunStatus.QUEUED,
    }
    assert _sweep(store, NOW + 15 * T, backlogged=backlog) == {
        "a": RunStatus.QUEUED,
        "b": RunStatus.QUEUED,
    }


def test_a_backlog_never_holds_back_interrupted_or_orphaned_runs(store: RunStore) -> None:
    """Interrupted and orphaned runs have no message anywhere: they are always re-published."""
    _interrupted(store, "a")
    asked: list[str] = []
    batch = store.sweep(
        now=NOW + 10, queued_timeout_s=T, backlogged=lambda q: asked.append(q) is None
    )
    assert [r.run_id for r in batch.requeued] == ["a"] and batch.deferred == 0
    assert asked == []


def test_two_sweeps_requeue_each_run_once(store: RunStore) -> None:
    """Two sweeps over the same interrupted runs requeue each run exactly once in total."""
    for i in range(20):
        _interrupted(store, f"r{i}")
    first = store.sweep(now=NOW + 10, queued_timeout_s=T, batch=7)
    second = store.sweep(now=NOW + 10, queued_timeout_s=T, batch=1000)
    ids = [r.run_id for r in first.requeued + second.requeued]
    assert len(first.requeued) == 7 and first.more and not second.more
    assert sorted(ids) == sorted(f"r{i}" for i in range(20))


def test_repeated_batches_visit_each_due_run_once(store: RunStore) -> None:
    """Calling again while ``more`` is set visits every due run once, in due order (within
    each index partition, when the indexes are split: each sweep serves every partition)."""
    for i in range(25):
        _interrupted(store, f"r{i:02d}", now=NOW + i)
    seen: list[str] = []
    calls = 0
    while True:
        batch = store.sweep(now=NOW + 100, queued_timeout_s=T, batch=10)
        assert len(batch.requeued) <= 10
        seen += [r.run_id for r in batch.requeued]
        calls += 1
        if not batch.more:
            break
    keys = store.keys if isinstance(store, RedisStore) else None
    if keys is None or not keys.shards:
        assert calls == 3
        assert seen == [f"r{i:02d}" for i in range(25)]
        return
    assert sorted(seen) == [f"r{i:02d}" for i in range(25)]
    for part in keys.partitions():
        mine = [run_id for run_id in seen if keys.partition(run_id) == part]
        assert mine == sorted(mine)
    # Every call takes a share of every partition that has due runs: the calls are bounded
    # by the biggest partition as well as by the batch.
    biggest = max(sum(keys.partition(r) == p for r in seen) for p in keys.partitions())
    assert calls <= 3 + biggest


def test_a_record_the_sweep_cannot_act_on_is_reported_once_per_timeout(
    store: RunStore, backend: Backend
) -> None:
    """An unreadable record is reported and skipped, and reported again a timeout later."""
    for run_id in ("a", "b", "c"):
        _interrupted(store, run_id)
    backend.set_record_field("b", "status", "exploded")
    batch = store.sweep(now=NOW + 10, queued_timeout_s=T)
    assert sorted(r.run_id for r in batch.requeued) == ["a", "c"]
    assert [run_id for run_id, _ in batch.errors] == ["b"]
    assert "exploded" in batch.errors[0][1]
    assert store.sweep(now=NOW + 11, queued_timeout_s=T).errors == []
    later = store.sweep(now=NOW + 10 + T, queued_timeout_s=T)
    assert [run_id for run_id, _ in later.errors] == ["b"]


def test_the_stored_request_is_published_as_stored(store: RunStore, backend: Backend) -> None:
    """The sweep hands back the stored request bytes unparsed (the worker validates them)."""
    _interrupted(store, "a")
    backend.set_record_field("a", "request", "{not json")
    batch = store.sweep(now=NOW + 10, queued_timeout_s=T)
    assert [(r.run_id, r.request_json) for r in batch.requeued] == [("a", "{not json")]


def test_finished_or_missing_runs_are_dropped_from_the_indexes(
    store: RunStore, backend: Backend
) -> None:
    """A finished or unknown run found in the indexes is removed from them and reported."""
    fence = claimed(store, registered(store, "done", now=NOW))
    finish(store, "done", fence, RunStatus.COMPLETED)
    backend.index_as_active("done", NOW)
    backend.index_as_active("ghost", NOW + 1)
    _interrupted(store, "x", now=NOW + 2)
    audit = store.audit_index(now=NOW + 10)
    assert (audit.checked, audit.added) == (3, 2)
    batch = store.sweep(now=NOW + 10, queued_timeout_s=T)
    assert sorted(run_id for run_id, _ in batch.errors) == ["done", "ghost"]
    assert [r.run_id for r in batch.requeued] == ["x"]
    again = store.sweep(now=NOW + 10, queued_timeout_s=T)
    assert (again.errors, again.scanned) == ([], 0)
    assert store.audit_index(now=NOW + 11).added == 0
    assert [r.run_id for r in store.list_runs()] == ["x", "done"]


def test_the_audit_restores_runs_missing_from_the_recovery_index(
    store: RunStore, backend: Backend
) -> None:
    """Active runs without an index entry (older data) are found by the audit and recovered."""
    _interrupted(store, "x")
    claimed(store, registered(store, "live"))
    registered(store, "q")
    for run_id in ("x", "live", "q"):
        backend.drop_from_recovery_index(run_id)
    assert store.sweep(now=NOW + 10, queued_timeout_s=T).scanned == 0  # invisible
    audit = store.audit_index(now=NOW + 10, limit=1)  # short of entries: checks them all
    assert (audit.checked, audit.added) == (3, 3)
    batch = store.sweep(now=NOW + 10, queued_timeout_s=T)
    assert [r.run_id for r in batch.requeued] == ["x"] and batch.scanned == 3
    assert store.sweep(now=NOW + 11, queued_timeout_s=T).scanned == 0
    assert _sweep(store, NOW + T) == {"q": RunStatus.QUEUED}  # its timeout still counts


def test_the_audit_of_a_whole_index_checks_one_slice_per_call(store: RunStore) -> None:
    """With every run indexed, each audit call checks the next ``limit`` runs, round robin."""
    for i in range(25):
        registered(store, f"r{i:02d}", now=NOW + i)
    checked = [store.audit_index(now=NOW + 30, limit=10) for _ in range(4)]
    keys = store.keys if isinstance(store, RedisStore) else None
    if keys is not None and keys.shards:
        # Split indexes: a slice of every partition per call, the limit shared evenly.
        per = -(-10 // keys.shards)
        assert all(a.added == 0 and a.checked <= per * keys.shards for a in checked), checked
        assert sum(a.checked for a in checked) >= 25  # every run within the four calls
        return
    assert [(a.checked, a.added) for a in checked[:3]] == [(10, 0), (10, 0), (5, 0)]
    assert checked[3].checked == 10  # wrapped around


def test_a_released_lease_is_due_at_once(store: RunStore) -> None:
    """A lease dropped because its owner is provably dead is swept now, not at its expiry."""
    fence = claimed(store, registered(store))
    assert store.sweep(now=NOW + 2, queued_timeout_s=T).scanned == 0  # lease deadline ahead
    assert store.release_lease("r1", fence_token=fence.token)
    assert _sweep(store, NOW + 2) == {"r1": RunStatus.RUNNING}
