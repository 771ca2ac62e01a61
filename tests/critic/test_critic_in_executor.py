"""The critic through the real executor and the in-memory store: nudges land in the transcript,
kills end the run failed with ``critic_kill``, and the critic state a resume needs is kept."""

from __future__ import annotations

import time

from executus_worker.checkpoint import MemoryStore, StoreCheckpointerFactory
from executus_worker.core.executor import execute
from executus_worker.core.models import OutcomeKind, RunInfo, RunRequest, RunStatus
from executus_worker.core.ports import Deps, ModelReply, ModelRequest
from executus_worker.core.scripted import ScriptedAgent, ScriptedModel, say
from executus_worker.core.stop import StopReason, StopToken
from executus_worker.critic import ExtendBy, ExtendOnce, KillOnStall, Nudge, TimeoutCritic


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def claimed(store: MemoryStore, run_id: str, **metadata: str) -> RunInfo:
    request = RunRequest(run_id=run_id, agent="t", metadata=metadata)
    store.register(request, run_id=run_id, queue="q", now=time.time())
    claim = store.claim(run_id, owner="w", lease_ttl_s=30, max_attempts=5, now=time.time())
    assert claim.fence is not None
    return RunInfo.from_request(
        request,
        run_id=run_id,
        epoch=claim.fence.epoch,
        attempt=claim.attempts,
        fence=claim.fence.token,
    )


def slow_steps(critic: TimeoutCritic, clock: Clock, step_s: float, done_at: int = 10**6):
    """A model whose every call takes ``step_s`` on the fake clock, checked by the critic
    mid-step (as its thread would)."""

    def reply(request: ModelRequest) -> ModelReply:
        clock.t += step_s
        critic.check()
        n = sum(1 for m in request.messages if m.role == "assistant") + 1
        return say(f"step {n}", done=n >= done_at, output="done")

    return reply


def test_a_nudge_is_appended_before_the_next_model_call_and_kept_in_the_transcript() -> None:
    store, clock = MemoryStore(), Clock()
    critic = TimeoutCritic(
        policy=ExtendOnce(extend_s=100, nudge="Time is up: give your final answer now."),
        runtime_s=25,
        clock=clock,
    )
    seen: list[list[str]] = []
    model_fn = slow_steps(critic, clock, step_s=10, done_at=4)

    def model(request: ModelRequest) -> ModelReply:
        seen.append([m.content for m in request.messages])
        return model_fn(request)

    run = claimed(store, "nudged")
    deps = Deps(checkpoints=StoreCheckpointerFactory(store), critic=critic)
    outcome = execute(ScriptedAgent("t", ScriptedModel(model)), run, deps, StopToken())
    assert outcome.kind is OutcomeKind.COMPLETED
    nudge = "Time is up: give your final answer now."
    # The stall happens during step 3 (30 s > 25 s): step 4's request carries the nudge.
    assert seen[3][-1] == nudge and nudge not in seen[2]
    transcript = store.transcript("nudged")
    assert [(m.role, m.content) for m in transcript] == [
        ("assistant", "step 1"),
        ("assistant", "step 2"),
        ("assistant", "step 3"),
        ("user", nudge),
        ("assistant", "step 4"),
    ]


def test_a_killed_run_ends_failed_with_critic_kill_and_its_partial_transcript() -> None:
    store, clock = MemoryStore(), Clock()
    critic = TimeoutCritic(policy=KillOnStall(), runtime_s=25, clock=clock)
    run = claimed(store, "killed")
    deps = Deps(checkpoints=StoreCheckpointerFactory(store), critic=critic)
    model = ScriptedModel(slow_steps(critic, clock, step_s=10))
    outcome = execute(ScriptedAgent("t", model), run, deps, StopToken())
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.startswith("critic_kill: runtime 30.0s")
    record = store.get("killed")
    assert record is not None and record.status is RunStatus.FAILED
    assert record.error is not None and record.error.startswith("critic_kill:")
    # The step during which the kill came completes; the run stops at its boundary.
    assert [m.content for m in store.transcript("killed")] == ["step 1", "step 2", "step 3"]
    assert critic.watched() == 0


def test_an_interrupted_run_keeps_the_runtime_and_decisions_of_its_unfinished_step() -> None:
    store, clock = MemoryStore(), Clock()
    critic = TimeoutCritic(policy=ExtendOnce(extend_s=5), runtime_s=25, clock=clock)
    stop = StopToken()
    run = claimed(store, "paused")

    def model(request: ModelRequest) -> ModelReply:
        n = sum(1 for m in request.messages if m.role == "assistant") + 1
        clock.t += 10
        critic.check()
        if n == 3:  # the stall (30 s) is decided mid-step; then a shutdown cuts the step
            stop.request(StopReason.SHUTDOWN, "deploy")
            raise RuntimeError("cut short")
        return say(f"step {n}")

    deps = Deps(checkpoints=StoreCheckpointerFactory(store), critic=critic)
    outcome = execute(ScriptedAgent("t", ScriptedModel(model)), run, deps, stop)
    assert outcome.kind is OutcomeKind.INTERRUPTED
    checkpoint = store.load_checkpoint("paused")
    assert checkpoint is not None and checkpoint.iteration == 2
    assert checkpoint.critic_state["elapsed_s"] == 30.0
    assert checkpoint.critic_state["fired"] == ["extend"]  # no second extension on resume


def test_a_policy_may_nudge_and_extend_through_the_executor() -> None:
    store, clock = MemoryStore(), Clock()

    class NudgeAndExtend:
        def decide(self, stall: object) -> list[object]:
            return [Nudge("wrap up"), ExtendBy(1000)]

    critic = TimeoutCritic(
        policy=NudgeAndExtend(),  # type: ignore[arg-type]
        runtime_s=15,
        backstop_mul=10,
        clock=clock,
    )
    run = claimed(store, "both")
    deps = Deps(checkpoints=StoreCheckpointerFactory(store), critic=critic)
    model = ScriptedModel(slow_steps(critic, clock, step_s=10, done_at=3))
    assert execute(ScriptedAgent("t", model), run, deps, StopToken()).kind is OutcomeKind.COMPLETED
    transcript = [m.content for m in store.transcript("both")]
    assert transcript == ["step 1", "step 2", "wrap up", "step 3"]
