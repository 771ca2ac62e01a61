"""The kernel on the real stores: MemoryStore, fakeredis and a real Redis, through RunHandle.

The decision-table tests use an in-test fake; these check that the same endings land as the
right run statuses and exact transcripts when claims, epochs and the throttle are real.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from kernel_fakes import FakeClock, StopAfter

from executus_worker.checkpoint import MemoryStore, RedisStore, StoreCheckpointerFactory
from executus_worker.checkpoint.store import ClaimStatus, RunStore
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import Message, OutcomeKind, RunInfo, RunOutcome, RunRequest
from executus_worker.core.ports import Deps, StepObserver
from executus_worker.core.stop import StopReason, StopToken

LEASE_S = 30.0


@dataclass
class Backend:
    store: RunStore
    clock: FakeClock
    expire_lease: Any  # (run_id) -> None: what a crashed owner's silence does


@pytest.fixture(params=["memory", "fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    clock = FakeClock()
    if request.param == "memory":
        memory = MemoryStore(clock=clock.now)

        def expire_memory(run_id: str) -> None:
            clock.sleep(LEASE_S + 1)

        yield Backend(memory, clock, expire_memory)
        return
    client: Any = (
        fakeredis.FakeRedis(server=fakeredis.FakeServer())
        if request.param == "fakeredis"
        else request.getfixturevalue("redis_client")
    )
    store = RedisStore(client, key_prefix="kernel")
    yield Backend(store, clock, lambda run_id: client.delete(store.keys.lease(run_id)))
    if request.param == "fakeredis":
        client.close()


class Runner:
    def __init__(
        self,
        backend: Backend,
        agent: str,
        input: dict[str, Any],
        run_id: str = "run-1",
        **factory: Any,
    ) -> None:
        self.b = backend
        self.request = RunRequest(agent=agent, input=input)
        self.run_id = run_id
        self.registry = AgentRegistry.with_builtins(clock=backend.clock)
        self.factory = StoreCheckpointerFactory(backend.store, clock=backend.clock, **factory)
        backend.store.register(self.request, run_id=self.run_id, queue="q", now=backend.clock.t)

    def claim(self, owner: str = "w1") -> RunInfo:
        claim = self.b.store.claim(
            self.run_id, owner=owner, lease_ttl_s=LEASE_S, max_attempts=5, now=self.b.clock.t
        )
        assert claim.status is ClaimStatus.CLAIMED
        return RunInfo.from_request(
            self.request,
            run_id=self.run_id,
            epoch=claim.epoch,
            attempt=claim.attempts,
            fence=claim.fence.token if claim.fence else "",
        )

    def attempt(
        self, run: RunInfo, token: StopToken | None = None, observer: StepObserver | None = None
    ) -> RunOutcome:
        deps = Deps(checkpoints=self.factory, clock=self.b.clock)
        if observer is not None:
            deps = dataclasses.replace(deps, observer=observer)
        agent = self.registry.get(self.request.agent)
        return execute(agent, run, deps, token or StopToken())

    def interrupted_after(self, k: int) -> RunOutcome:
        token = StopToken()
        return self.attempt(self.claim(), token, StopAfter(token, k, StopReason.SHUTDOWN))

    def status(self) -> str:
        record = self.b.store.get(self.run_id)
        assert record is not None
        return record.status.value

    def transcript(self) -> list[str]:
        return [m.content for m in self.b.store.transcript(self.run_id)]


def test_counter_interrupted_and_resumed_on_a_store_is_exact(backend: Backend) -> None:
    runner = Runner(backend, "demo.counter", {"steps": 6})
    assert runner.interrupted_after(2).kind is OutcomeKind.INTERRUPTED
    assert runner.status() == "interrupted"
    assert runner.transcript() == ["step 1", "step 2"]
    assert runner.interrupted_after(4).kind is OutcomeKind.INTERRUPTED
    outcome = runner.attempt(runner.claim())
    assert (outcome.kind, outcome.output) == (OutcomeKind.COMPLETED, "done 6")
    record = backend.store.get(runner.run_id)
    assert record is not None
    assert (record.status.value, record.output, record.epoch) == ("completed", "done 6", 3)
    assert runner.transcript() == [f"step {i}" for i in range(1, 7)]
    assert backend.store.load_checkpoint(runner.run_id) is None


def test_phased_resume_on_a_store_rewrites_the_interrupted_phase(backend: Backend) -> None:
    runner = Runner(backend, "demo.phased", {"phases": ["plan", "work", "report"], "steps": 3})
    runner.interrupted_after(5)  # plan 1-3, work 1-2
    saved = backend.store.load_checkpoint(runner.run_id)
    assert saved is not None
    assert (saved.completed_phases, saved.active_phase, saved.phase_start) == (["plan"], "work", 3)
    outcome = runner.attempt(runner.claim())
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == {"plan": "plan done", "work": "work done", "report": "report done"}
    assert runner.transcript() == [
        f"{phase} step {j}" for phase in ("plan", "work", "report") for j in (1, 2, 3)
    ]


def test_a_throttled_run_still_flushes_its_last_step_on_shutdown(backend: Backend) -> None:
    runner = Runner(backend, "demo.counter", {"steps": 5}, throttle_ms=60_000)
    runner.interrupted_after(3)  # only step 1 passed the throttle; interrupt forces step 3
    assert runner.transcript() == ["step 1", "step 2", "step 3"]
    runner.attempt(runner.claim())
    assert runner.transcript() == [f"step {i}" for i in range(1, 6)]


def test_a_stale_owner_is_fenced_and_the_new_owner_finishes_exactly(backend: Backend) -> None:
    runner = Runner(backend, "demo.counter", {"steps": 5})
    first = runner.claim("w1")
    taken: list[RunInfo] = []

    class Takeover:
        """After step 2, w1 stalls past its lease and w2 claims the run (epoch 2)."""

        def on_step(self, run: RunInfo, iteration: int, new: tuple[Message, ...]) -> None:
            if iteration == 2 and not taken:
                backend.expire_lease(runner.run_id)
                taken.append(runner.claim("w2"))

    outcome = runner.attempt(first, observer=Takeover())  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.LOST
    assert outcome.error is not None and outcome.error.startswith("OwnershipLost")
    assert runner.status() == "running"  # w1 wrote nothing more: w2 owns the status
    assert runner.transcript() == ["step 1"]  # w1's step-2 save was the fenced one
    assert runner.attempt(taken[0]).kind is OutcomeKind.COMPLETED
    assert runner.transcript() == [f"step {i}" for i in range(1, 6)]


def test_cancel_and_failure_land_as_terminal_statuses(backend: Backend) -> None:
    cancelled = Runner(backend, "demo.counter", {"steps": 5})
    token = StopToken()
    outcome = cancelled.attempt(cancelled.claim(), token, StopAfter(token, 2, StopReason.CANCEL))
    assert outcome.kind is OutcomeKind.CANCELLED
    assert cancelled.status() == "cancelled"
    assert backend.store.load_checkpoint(cancelled.run_id) is None

    failed = Runner(backend, "demo.counter", {"steps": -1}, run_id="run-2")
    outcome = failed.attempt(failed.claim())
    assert outcome.kind is OutcomeKind.FAILED
    record = backend.store.get("run-2")
    assert record is not None
    assert record.status.value == "failed"
    assert record.error is not None
    assert record.error.startswith("PayloadError: invalid input for demo.counter: steps")
