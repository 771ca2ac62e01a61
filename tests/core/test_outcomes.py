"""The outcome decision table, row by row, through the executor and the one write each makes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kernel_fakes import (
    FakeCheckpoints,
    FakeClock,
    RecordingAudit,
    RecordingCritic,
    StopAfter,
    deps,
    raising_model,
    run_info,
)

from executus_worker.core.demo_agents import CounterAgent
from executus_worker.core.executor import execute
from executus_worker.core.models import Message, OutcomeKind, RunInfo, ToolCall
from executus_worker.core.outcome import classify
from executus_worker.core.ports import ModelReply, ModelRequest, ToolSpec, Usage
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel, say
from executus_worker.core.stop import (
    BudgetExceeded,
    CancelRequested,
    CriticKilled,
    OwnershipLost,
    ShutdownRequested,
    StopReason,
    StopToken,
)
from executus_worker.errors import CorruptCheckpointError, ExecutusError, UnsupportedFormatError


class SoftTimeLimitExceeded(Exception):
    """Stands in for Celery's, which is an Exception raised into the running task."""


def counting(request: ModelRequest) -> ModelReply:
    n = sum(1 for m in request.messages if m.role == "assistant") + 1
    return say(f"step {n}", done=n == 5, output="five")


def agent_raising(at_call: int, make: Callable[[], BaseException]) -> ScriptedAgent:
    return ScriptedAgent("t", ScriptedModel(raising_model(counting, at_call, make)))


def final(checkpoints: FakeCheckpoints) -> dict[str, object]:
    return checkpoints.store.finals["run-1"]


# -- the table, as a pure function ------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "pending", "kind", "error"),
    [
        (None, None, OutcomeKind.COMPLETED, None),
        (None, StopReason.SHUTDOWN, OutcomeKind.COMPLETED, None),  # finished beats a late stop
        (ShutdownRequested("drain"), None, OutcomeKind.INTERRUPTED, None),
        (CancelRequested("user"), None, OutcomeKind.CANCELLED, None),
        (CriticKilled("stuck"), None, OutcomeKind.FAILED, "critic_kill: stuck"),
        (BudgetExceeded("$2 > $1"), None, OutcomeKind.FAILED, "budget_exceeded: $2 > $1"),
        (OwnershipLost("epoch 3"), None, OutcomeKind.LOST, "OwnershipLost: epoch 3"),
        (ValueError("bad"), None, OutcomeKind.FAILED, "ValueError: bad"),
        (ValueError(), None, OutcomeKind.FAILED, "ValueError"),
        (SoftTimeLimitExceeded(), StopReason.SHUTDOWN, OutcomeKind.INTERRUPTED, None),
        (SoftTimeLimitExceeded(), StopReason.CANCEL, OutcomeKind.CANCELLED, None),
        (SoftTimeLimitExceeded(), StopReason.CRITIC, OutcomeKind.FAILED, "critic_kill: slow"),
        (ValueError("x"), StopReason.BUDGET, OutcomeKind.FAILED, "budget_exceeded: slow"),
        (ValueError("x"), StopReason.LOST_OWNERSHIP, OutcomeKind.LOST, "OwnershipLost: slow"),
    ],
)
def test_classify(
    exc: BaseException | None, pending: StopReason | None, kind: OutcomeKind, error: str | None
) -> None:
    token = StopToken()
    if pending is not None:
        token.request(pending, "slow")
    verdict = classify(exc, token)
    assert (verdict.kind, verdict.error) == (kind, error)


# -- the same rows through the executor -------------------------------------------------------


def test_shutdown_interrupts_with_the_last_completed_step() -> None:
    checkpoints, token = FakeCheckpoints(), StopToken()
    observer = StopAfter(token, 2, StopReason.SHUTDOWN)
    outcome = execute(
        CounterAgent(FakeClock()),
        run_info(input={"steps": 5}),
        deps(checkpoints, observer=observer),
        token,
    )
    assert (outcome.kind, outcome.iterations, outcome.error) == (OutcomeKind.INTERRUPTED, 2, None)
    assert checkpoints.store.calls[-1] == ("interrupt", 2)
    assert checkpoints.store.transcript("run-1") == ["step 1", "step 2"]


def test_a_stop_requested_before_the_first_step_runs_no_step() -> None:
    checkpoints, token = FakeCheckpoints(), StopToken()
    token.request(StopReason.SHUTDOWN)
    model = ScriptedModel(counting)
    outcome = execute(ScriptedAgent("t", model), run_info(), deps(checkpoints), token)
    assert outcome.kind is OutcomeKind.INTERRUPTED
    assert model.calls == 0
    assert checkpoints.store.calls == [("load",), ("interrupt", 0)]


def test_cancel_deletes_the_checkpoint_and_records_cancelled() -> None:
    checkpoints, token = FakeCheckpoints(), StopToken()
    observer = StopAfter(token, 2, StopReason.CANCEL)
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)),
        run_info(),
        deps(checkpoints, observer=observer),
        token,
    )
    assert outcome.kind is OutcomeKind.CANCELLED
    assert final(checkpoints)["status"] == "cancel"
    assert "run-1" not in checkpoints.store.checkpoints


def test_cancel_wins_over_a_simultaneous_shutdown() -> None:
    checkpoints = FakeCheckpoints()
    drain = StopToken()
    linked = StopToken(parents=[drain])
    drain.request(StopReason.SHUTDOWN)
    linked.request(StopReason.CANCEL)
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(checkpoints), linked
    )
    assert outcome.kind is OutcomeKind.CANCELLED


def test_critic_kill_fails_the_run_with_its_reason() -> None:
    checkpoints = FakeCheckpoints()
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)),
        run_info(),
        deps(checkpoints, critic=RecordingCritic(kill_at=3)),
        StopToken(),
    )
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == "critic_kill: step 3 overran its 5s budget"
    assert final(checkpoints)["error"] == outcome.error
    assert checkpoints.store.transcript("run-1") == ["step 1", "step 2", "step 3"]


def test_a_budget_stop_fails_the_run_without_the_half_finished_step() -> None:
    class Budget:
        def __init__(self) -> None:
            self.spent = 0

        def check(self, run: RunInfo) -> None:
            return None

        def charge(self, run: RunInfo, usage: Usage) -> None:
            self.spent += 1
            if self.spent > 2:
                raise BudgetExceeded("guild g1 spent $2.00 of $2.00")

    checkpoints = FakeCheckpoints()
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)),
        run_info(),
        deps(checkpoints, budget=Budget()),
        StopToken(),
    )
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == "budget_exceeded: guild g1 spent $2.00 of $2.00"
    assert outcome.traceback is None  # a decision, not a bug
    assert checkpoints.store.transcript("run-1") == ["step 1", "step 2"]


def test_a_failing_budget_battery_is_contained() -> None:
    class Budget:
        def check(self, run: RunInfo) -> None:
            raise ConnectionError("redis gone")

        def charge(self, run: RunInfo, usage: Usage) -> None:
            raise ExecutusError("not a stop: logged and ignored")

    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(budget=Budget()), StopToken()
    )
    assert (outcome.kind, outcome.output) == (OutcomeKind.COMPLETED, "five")


def test_a_tool_error_mid_step_never_persists_that_steps_messages() -> None:
    class Tools:
        def specs(self, run: RunInfo) -> tuple[ToolSpec, ...]:
            return (ToolSpec("boom"),)

        def call(self, run: RunInfo, call: ToolCall) -> Message:
            raise RuntimeError("tool exploded")

    model = ScriptedModel(["one", say("two", tool_calls=[ToolCall(id="c", name="boom")])])
    checkpoints = FakeCheckpoints()
    outcome = execute(
        ScriptedAgent("t", model, tools_=Tools()), run_info(), deps(checkpoints), StopToken()
    )
    assert (outcome.kind, outcome.error) == (OutcomeKind.FAILED, "RuntimeError: tool exploded")
    assert checkpoints.store.transcript("run-1") == ["one"]


def test_any_exception_fails_the_run_as_type_and_message() -> None:
    checkpoints = FakeCheckpoints()
    agent = agent_raising(3, lambda: KeyError("missing"))
    outcome = execute(agent, run_info(), deps(checkpoints), StopToken())
    assert (outcome.kind, outcome.error) == (OutcomeKind.FAILED, "KeyError: 'missing'")
    recorded = str(final(checkpoints)["error"])
    # The record keeps the traceback after the one-line summary (what `status` shows).
    first, _, tb = recorded.partition("\n")
    assert first == "KeyError: 'missing'"
    assert tb.startswith("Traceback (most recent call last):")
    assert tb.endswith("KeyError: 'missing'")
    assert outcome.traceback == tb


def test_exception_raised_during_shutdown_interrupts_instead_of_failing() -> None:
    checkpoints, token = FakeCheckpoints(), StopToken()

    def cut_short() -> BaseException:
        token.request(StopReason.SHUTDOWN, "worker draining")
        return SoftTimeLimitExceeded()

    outcome = execute(agent_raising(3, cut_short), run_info(), deps(checkpoints), token)
    assert outcome.kind is OutcomeKind.INTERRUPTED
    assert checkpoints.store.calls[-1] == ("interrupt", 2)
    assert "run-1" not in checkpoints.store.finals
    assert checkpoints.store.transcript("run-1") == ["step 1", "step 2"]


def test_lost_ownership_from_a_save_writes_nothing_more() -> None:
    checkpoints = FakeCheckpoints(
        options={"save_error": lambda n: OwnershipLost("epoch 2 < 3") if n == 2 else None}
    )
    audit = RecordingAudit()
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)),
        run_info(),
        deps(checkpoints, audit=audit),
        StopToken(),
    )
    assert (outcome.kind, outcome.error) == (OutcomeKind.LOST, "OwnershipLost: epoch 2 < 3")
    assert checkpoints.store.names() == ["load", "save"]
    assert audit.events[-1][0] == "lost"


def test_lost_ownership_from_the_token_writes_nothing_more() -> None:
    checkpoints, token = FakeCheckpoints(), StopToken()
    observer = StopAfter(token, 2, StopReason.LOST_OWNERSHIP)
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)),
        run_info(),
        deps(checkpoints, observer=observer),
        token,
    )
    assert outcome.kind is OutcomeKind.LOST
    assert checkpoints.store.names() == ["load", "save", "save"]


def test_a_save_error_fails_the_run_with_the_last_saved_step() -> None:
    checkpoints = FakeCheckpoints(
        options={"save_error": lambda n: ConnectionError("redis gone") if n == 3 else None}
    )
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(checkpoints), StopToken()
    )
    assert (outcome.kind, outcome.error) == (OutcomeKind.FAILED, "ConnectionError: redis gone")
    assert final(checkpoints)["checkpoint"].iteration == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("error", [OwnershipLost("epoch 9"), ConnectionError("redis gone")])
def test_an_error_in_the_finalize_write_is_lost(error: BaseException) -> None:
    checkpoints = FakeCheckpoints(options={"finalize_error": error})
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(checkpoints), StopToken()
    )
    assert outcome.kind is OutcomeKind.LOST
    assert outcome.error is not None
    assert outcome.error.startswith("recording completed failed: ")
    assert outcome.output is None


@pytest.mark.parametrize("foreign", [KeyboardInterrupt, SystemExit])
def test_foreign_base_exceptions_propagate_after_nothing_else(
    foreign: type[BaseException],
) -> None:
    checkpoints, critic, audit = FakeCheckpoints(), RecordingCritic(), RecordingAudit()
    with pytest.raises(foreign):
        execute(
            agent_raising(2, foreign),
            run_info(),
            deps(checkpoints, critic=critic, audit=audit),
            StopToken(),
        )
    assert checkpoints.store.names() == ["load", "save"]
    assert not {"completed", "failed", "lost"} & set(audit.names())
    assert critic.watches[0].closed  # the watchdog is let go, so it cannot fire later


def test_bad_demo_input_fails_the_run_with_a_clear_error() -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.counter", input={"steps": 0, "colour": "red"})
    outcome = execute(CounterAgent(FakeClock()), run, deps(checkpoints), StopToken())
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert outcome.error.startswith("PayloadError: invalid input for demo.counter: steps: ")
    assert "colour: Extra inputs are not permitted" in outcome.error


def test_a_corrupt_checkpoint_fails_the_run() -> None:
    class Corrupt(FakeCheckpoints):
        def begin(self, run: RunInfo, stop: StopToken | None = None):  # type: ignore[no-untyped-def]
            handle = super().begin(run, stop)

            def load() -> None:
                raise CorruptCheckpointError(run.run_id, "meta is not JSON")

            handle.load = load  # type: ignore[method-assign]
            return handle

    checkpoints = Corrupt()
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(checkpoints), StopToken()
    )
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == "CorruptCheckpointError: run 'run-1': meta is not JSON"


def _unreadable(error: Exception) -> FakeCheckpoints:
    class Unreadable(FakeCheckpoints):
        def begin(self, run: RunInfo, stop: StopToken | None = None):  # type: ignore[no-untyped-def]
            handle = super().begin(run, stop)

            def load() -> None:
                raise error

            handle.load = load  # type: ignore[method-assign]
            return handle

    return Unreadable()


@pytest.mark.parametrize("pending", [None, StopReason.SHUTDOWN])
def test_a_checkpoint_of_a_newer_format_parks_the_run(pending: StopReason | None) -> None:
    checkpoints = _unreadable(UnsupportedFormatError("run-1", "format 7", version=7))
    stop = StopToken()
    if pending is not None:
        stop.request(pending, "deploy")
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(checkpoints), stop
    )
    assert outcome.kind is OutcomeKind.PARKED
    assert checkpoints.store.calls == [("park", 7, "UnsupportedFormatError: run 'run-1': format 7")]


def test_a_newer_checkpoint_under_a_pending_cancel_is_cancelled_not_parked() -> None:
    checkpoints = _unreadable(UnsupportedFormatError("run-1", "format 7", version=7))
    stop = StopToken()
    stop.request(StopReason.CANCEL, "user")
    outcome = execute(
        ScriptedAgent("t", ScriptedModel(counting)), run_info(), deps(checkpoints), stop
    )
    assert outcome.kind is OutcomeKind.CANCELLED
