"""The single loop and the phased loop, run to completion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kernel_fakes import (
    FakeCheckpoints,
    FakeClock,
    RecordingAudit,
    RecordingCritic,
    StopAfter,
    deps,
    run_info,
)

from executus_worker.core.demo_agents import CounterAgent, PhasedAgent
from executus_worker.core.executor import execute
from executus_worker.core.models import Message, OutcomeKind, RunInfo, RunLimits, ToolCall
from executus_worker.core.ports import Deps, NoCheckpoints, ToolSpec, Usage
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel, say
from executus_worker.core.stop import StopReason, StopToken


def counter(steps: int = 4, **kw: Any) -> RunInfo:
    return run_info("demo.counter", input={"steps": steps, "step_s": 0.5}, **kw)


def test_counter_completes_with_exact_transcript_and_output() -> None:
    checkpoints, clock = FakeCheckpoints(), FakeClock()
    outcome = execute(CounterAgent(clock), counter(4), deps(checkpoints, clock=clock), StopToken())
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == "done 4"
    assert outcome.iterations == 4
    assert checkpoints.store.transcript("run-1") == ["step 1", "step 2", "step 3", "step 4"]
    assert clock.slept == [0.5] * 4  # each step "thinks" on the injected clock


def test_every_step_but_the_last_is_saved_then_complete_writes_the_final_state() -> None:
    checkpoints = FakeCheckpoints()
    execute(CounterAgent(FakeClock()), counter(3), deps(checkpoints), StopToken())
    assert checkpoints.store.calls == [
        ("load",),
        ("save", 1, False),
        ("save", 2, False),
        ("complete", 3, "done 3"),
    ]
    assert "run-1" not in checkpoints.store.checkpoints  # terminal: no recovery candidate


def test_phased_runs_phases_in_order_and_outputs_the_phase_outputs() -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.phased", input={"phases": ["plan", "work", "report"], "steps": 2})
    outcome = execute(PhasedAgent(FakeClock()), run, deps(checkpoints), StopToken())
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == {"plan": "plan done", "work": "work done", "report": "report done"}
    assert checkpoints.store.transcript("run-1") == [
        "plan step 1",
        "plan step 2",
        "work step 1",
        "work step 2",
        "report step 1",
        "report step 2",
    ]
    final = checkpoints.store.finals["run-1"]["checkpoint"]
    assert final.completed_phases == ["plan", "work", "report"]


def test_phase_boundaries_are_forced_saves_recording_the_completed_phase() -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.phased", input={"phases": ["a", "b", "c"], "steps": 2})
    execute(PhasedAgent(FakeClock()), run, deps(checkpoints), StopToken())
    forced = [call for call in checkpoints.store.calls if call[0] == "save" and call[2]]
    assert forced == [("save", 2, True), ("save", 4, True)]  # after a and b; c ends in complete


def test_phase_boundary_checkpoint_holds_phase_outputs_and_next_phase_start() -> None:
    checkpoints = FakeCheckpoints()
    token = StopToken()
    run = run_info("demo.phased", input={"phases": ["a", "b"], "steps": 2})
    # Stop right after phase a's last step: the run stops at the boundary it just flushed.
    observer = StopAfter(token, 2, StopReason.SHUTDOWN)
    outcome = execute(PhasedAgent(FakeClock()), run, deps(checkpoints, observer=observer), token)
    assert outcome.kind is OutcomeKind.INTERRUPTED
    saved = checkpoints.store.checkpoints["run-1"]
    assert saved.completed_phases == ["a"]
    assert saved.phase_outputs == {"a": "a done"}
    assert saved.active_phase is None
    assert saved.phase_start == 2


def test_non_durable_run_completes_without_any_store() -> None:
    outcome = execute(
        CounterAgent(FakeClock()), counter(3), Deps(checkpoints=NoCheckpoints()), StopToken()
    )
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.output == "done 3"


def test_max_iterations_fails_the_run_with_a_clear_error() -> None:
    checkpoints = FakeCheckpoints()
    model = ScriptedModel(lambda request: say("again"))
    agent = ScriptedAgent("loop.forever", model)
    run = run_info(limits=RunLimits(max_iterations=3))
    outcome = execute(agent, run, deps(checkpoints), StopToken())
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error == (
        "RunLimitExceeded: run reached limits.max_iterations=3 without finishing"
    )
    assert model.calls == 3
    assert checkpoints.store.finals["run-1"]["status"] == "fail"
    assert checkpoints.store.transcript("run-1") == ["again"] * 3


def test_finishing_on_the_last_allowed_iteration_is_a_success() -> None:
    agent = ScriptedAgent("t", ScriptedModel(["one", "two", say("three", done=True, output=3)]))
    run = run_info(limits=RunLimits(max_iterations=3))
    outcome = execute(agent, run, deps(), StopToken())
    assert (outcome.kind, outcome.output) == (OutcomeKind.COMPLETED, 3)


def test_seed_persona_and_tools_reach_the_model_request() -> None:
    class Persona:
        def system_prompt(self, run: RunInfo) -> str | None:
            return "You are terse."

    class AgentTools:
        def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
            return (ToolSpec("lookup"), ToolSpec("shared"))

        def call(self, run: RunInfo, call: ToolCall) -> Message:
            return Message(role="tool", tool_call_id=call.id, content=f"agent:{call.name}")

    class SkillTools:
        def specs(self, run: RunInfo) -> Sequence[ToolSpec]:
            return (ToolSpec("search"), ToolSpec("shared"))

        def call(self, run: RunInfo, call: ToolCall) -> Message:
            return Message(role="tool", tool_call_id=call.id, content=f"skill:{call.name}")

    class Skills:
        def tools(self, run: RunInfo) -> SkillTools:
            return SkillTools()

    calls = (
        ToolCall(id="1", name="lookup"),
        ToolCall(id="2", name="search"),
        ToolCall(id="3", name="shared"),
    )
    model = ScriptedModel([say("using tools", tool_calls=calls), say("ok", done=True)])
    seed = (Message(role="user", content="hello"),)
    agent = ScriptedAgent("t", model, seeds={None: seed}, tools_=AgentTools())
    checkpoints = FakeCheckpoints()
    outcome = execute(
        agent, run_info(), deps(checkpoints, persona=Persona(), skills=Skills()), StopToken()
    )
    assert outcome.kind is OutcomeKind.COMPLETED
    first = model.requests[0]
    assert first.system_prompt == "You are terse."
    assert [m.content for m in first.messages] == ["hello"]
    assert [spec.name for spec in first.tools] == ["lookup", "shared", "search"]
    assert checkpoints.store.transcript("run-1") == [
        "hello",
        "using tools",
        "agent:lookup",
        "skill:search",
        "agent:shared",
        "ok",
    ]


def test_critic_watches_every_step_and_its_state_is_checkpointed() -> None:
    critic, checkpoints = RecordingCritic(), FakeCheckpoints()
    execute(CounterAgent(FakeClock()), counter(3), deps(checkpoints, critic=critic), StopToken())
    (watch,) = critic.watches
    assert watch.events == [
        ("started", 1),
        ("finished", 1),
        ("started", 2),
        ("finished", 2),
        ("started", 3),
        ("finished", 3),
    ]
    assert watch.closed
    assert checkpoints.store.finals["run-1"]["checkpoint"].critic_state == {"steps": 3}


def test_budget_is_charged_once_per_model_step_and_audit_sees_the_run() -> None:
    charged: list[Usage] = []

    class Budget:
        def check(self, run: RunInfo) -> None:
            return None

        def charge(self, run: RunInfo, usage: Usage) -> None:
            charged.append(usage)

    audit = RecordingAudit()
    execute(CounterAgent(FakeClock()), counter(3), deps(budget=Budget(), audit=audit), StopToken())
    assert len(charged) == 3
    assert all(usage.output_tokens == 3 for usage in charged)
    assert audit.names() == ["started", "step", "step", "step", "completed"]
    assert audit.events[0][1]["iteration"] == 0
    assert audit.events[-1][1] == {"iterations": 3}


def test_a_failing_observer_or_audit_does_not_fail_the_run() -> None:
    class Broken:
        def on_step(self, *args: object) -> None:
            raise RuntimeError("observer bug")

        def record(self, *args: object) -> None:
            raise RuntimeError("audit bug")

    outcome = execute(
        CounterAgent(FakeClock()),
        counter(2),
        deps(observer=Broken(), audit=Broken()),
        StopToken(),
    )
    assert outcome.kind is OutcomeKind.COMPLETED
