"""Interrupt, then resume: exact transcripts, boundary-granular phases, no re-seed mid-loop."""

from __future__ import annotations

import pytest
from kernel_fakes import FakeCheckpoints, FakeClock, RecordingCritic, StopAfter, deps, run_info

from executus_worker.core.demo_agents import CounterAgent, PhasedAgent
from executus_worker.core.executor import execute
from executus_worker.core.models import Message, OutcomeKind, RunInfo
from executus_worker.core.ports import ModelReply, ModelRequest
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel, say
from executus_worker.core.stop import StopReason, StopToken


def _interrupt_after(agent: object, run: RunInfo, checkpoints: FakeCheckpoints, k: int) -> None:
    token = StopToken()
    observer = StopAfter(token, k, StopReason.SHUTDOWN)
    outcome = execute(agent, run, deps(checkpoints, observer=observer), token)  # type: ignore[arg-type]
    assert outcome.kind is OutcomeKind.INTERRUPTED
    assert outcome.iterations == k


@pytest.mark.parametrize("k", [1, 3, 5])
def test_counter_interrupted_at_step_k_resumes_to_the_exact_transcript(k: int) -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.counter", input={"steps": 6})
    _interrupt_after(CounterAgent(FakeClock()), run, checkpoints, k)
    saved = checkpoints.store.checkpoints["run-1"]
    assert [m.content for m in saved.messages] == [f"step {i}" for i in range(1, k + 1)]
    assert saved.iteration == k
    assert checkpoints.store.calls[-1] == ("interrupt", k)

    outcome = execute(
        CounterAgent(FakeClock()),
        run.model_copy(update={"epoch": 2}),
        deps(checkpoints),
        StopToken(),
    )
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.iterations == 6
    assert checkpoints.store.transcript("run-1") == [f"step {i}" for i in range(1, 7)]


def test_counter_survives_many_interruptions() -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.counter", input={"steps": 5})
    for k in (1, 2, 4):
        _interrupt_after(CounterAgent(FakeClock()), run, checkpoints, k)
    outcome = execute(CounterAgent(FakeClock()), run, deps(checkpoints), StopToken())
    assert outcome.output == "done 5"
    assert checkpoints.store.transcript("run-1") == [f"step {i}" for i in range(1, 6)]


def test_single_loop_resume_adds_no_new_input_and_is_not_re_seeded() -> None:
    checkpoints = FakeCheckpoints()
    seed = (Message(role="user", content="go"),)

    def agent() -> tuple[ScriptedAgent, ScriptedModel]:
        def reply(request: ModelRequest) -> ModelReply:
            n = sum(1 for m in request.messages if m.role == "assistant") + 1
            return say(f"a{n}", done=n == 4, output="ok")

        model = ScriptedModel(reply)
        return ScriptedAgent("t", model, seeds={None: seed}), model

    first, _ = agent()
    _interrupt_after(first, run_info(), checkpoints, 2)
    second, model = agent()
    execute(second, run_info(epoch=2), deps(checkpoints), StopToken())
    assert [m.content for m in model.requests[0].messages] == ["go", "a1", "a2"]
    assert checkpoints.store.transcript("run-1") == ["go", "a1", "a2", "a3", "a4"]


def test_phased_resume_skips_completed_phases_and_restarts_the_interrupted_one() -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.phased", input={"phases": ["plan", "work", "report"], "steps": 3})
    # plan is steps 1-3; stop after step 5 = "work step 2", in the middle of work.
    _interrupt_after(PhasedAgent(FakeClock()), run, checkpoints, 5)
    saved = checkpoints.store.checkpoints["run-1"]
    assert saved.completed_phases == ["plan"]
    assert saved.active_phase == "work"
    assert saved.phase_start == 3
    assert [m.content for m in saved.messages][3:] == ["work step 1", "work step 2"]

    agent = PhasedAgent(FakeClock())
    models: list[ScriptedModel] = []
    real_model = agent.model

    def spy_model(info: RunInfo) -> ScriptedModel:
        model = real_model(info)
        assert isinstance(model, ScriptedModel)
        models.append(model)
        return model

    agent.model = spy_model  # type: ignore[method-assign,assignment]
    outcome = execute(agent, run.model_copy(update={"epoch": 2}), deps(checkpoints), StopToken())
    assert outcome.kind is OutcomeKind.COMPLETED
    (model,) = models
    # plan was not re-run; work restarted from its start (3 steps) then report (3 steps).
    assert [r.phase for r in model.requests] == ["work"] * 3 + ["report"] * 3
    assert [m.content for m in model.requests[0].messages] == [
        "plan step 1",
        "plan step 2",
        "plan step 3",
    ]
    assert checkpoints.store.transcript("run-1") == [
        "plan step 1",
        "plan step 2",
        "plan step 3",
        "work step 1",
        "work step 2",
        "work step 3",
        "report step 1",
        "report step 2",
        "report step 3",
    ]
    assert outcome.output == {"plan": "plan done", "work": "work done", "report": "report done"}


def test_phased_resume_persists_the_rewind_before_re_running_the_phase() -> None:
    checkpoints = FakeCheckpoints()
    run = run_info("demo.phased", input={"phases": ["a", "b"], "steps": 3})
    _interrupt_after(PhasedAgent(FakeClock()), run, checkpoints, 4)
    checkpoints.store.calls.clear()
    token = StopToken()
    token.request(StopReason.SHUTDOWN)  # stop before the first step of the resumed attempt
    outcome = execute(PhasedAgent(FakeClock()), run, deps(checkpoints), token)
    assert outcome.kind is OutcomeKind.INTERRUPTED
    assert checkpoints.store.calls == [("load",), ("save", 4, True), ("interrupt", 4)]
    assert checkpoints.store.transcript("run-1") == ["a step 1", "a step 2", "a step 3"]


def test_a_resumed_phase_is_re_seeded() -> None:
    checkpoints = FakeCheckpoints()
    seeds: dict[str | None, tuple[Message, ...]] = {
        "one": (Message(role="user", content="start one"),),
        "two": (Message(role="user", content="start two"),),
    }

    def reply(request: ModelRequest) -> ModelReply:
        mine = [m for m in request.messages if m.content.startswith(f"{request.phase}:")]
        n = len(mine) + 1
        return say(f"{request.phase}:{n}", done=n == 2, output=n)

    def agent() -> ScriptedAgent:
        return ScriptedAgent("t", ScriptedModel(reply), phase_names=["one", "two"], seeds=seeds)

    _interrupt_after(agent(), run_info(), checkpoints, 3)  # one:1 one:2 | two:1
    execute(agent(), run_info(epoch=2), deps(checkpoints), StopToken())
    assert checkpoints.store.transcript("run-1") == [
        "start one",
        "one:1",
        "one:2",
        "start two",
        "two:1",
        "two:2",
    ]


def test_critic_state_is_restored_on_resume() -> None:
    checkpoints, critic = FakeCheckpoints(), RecordingCritic()
    run = run_info("demo.counter", input={"steps": 4})
    token = StopToken()
    observer = StopAfter(token, 2, StopReason.SHUTDOWN)
    execute(
        CounterAgent(FakeClock()), run, deps(checkpoints, critic=critic, observer=observer), token
    )
    execute(CounterAgent(FakeClock()), run, deps(checkpoints, critic=critic), StopToken())
    first, second = critic.watches
    assert first.initial == {}
    assert second.initial == {"steps": 2}
    assert checkpoints.store.finals["run-1"]["checkpoint"].critic_state == {"steps": 4}
