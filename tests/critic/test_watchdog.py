"""The watchdog, driven by a fake clock and direct check() calls: no sleeping."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence

import pytest
from pydantic import JsonValue

from executus_worker.core.models import RunInfo
from executus_worker.core.ports import NullWatch
from executus_worker.core.stop import CriticKilled, StopReason, StopToken
from executus_worker.critic import (
    Decision,
    ExtendBy,
    ExtendOnce,
    Kill,
    KillOnStall,
    Nudge,
    Stall,
    TimeoutCritic,
)
from executus_worker.critic.policy import EscalationPolicy


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, JsonValue]]] = []

    def record(self, run: RunInfo, event: str, data: dict[str, JsonValue]) -> None:
        self.events.append((run.run_id, event, data))

    def decisions(self, run_id: str) -> list[JsonValue]:
        return [d["decision"] for r, e, d in self.events if r == run_id and e == "critic"]


class Scripted:
    """A policy answering from a list, recording every stall it was asked about."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.asked: list[Stall] = []

    def decide(self, stall: Stall) -> Decision | Sequence[Decision]:
        self.asked.append(stall)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def run(run_id: str = "r1", **metadata: str) -> RunInfo:
    return RunInfo(run_id=run_id, agent="demo.counter", metadata=metadata)


def make(
    policy: EscalationPolicy | None = None, runtime_s: float | None = 100, **kw: object
) -> tuple[TimeoutCritic, FakeClock, RecordingAudit]:
    clock, audit = FakeClock(), RecordingAudit()
    critic = TimeoutCritic(
        policy=policy or ExtendOnce(),
        runtime_s=runtime_s,
        audit=audit,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )
    return critic, clock, audit


# -- where the budget comes from ----------------------------------------------------------------


def test_a_run_without_any_budget_is_not_watched() -> None:
    critic, clock, _ = make(runtime_s=None)
    stop = StopToken()
    assert isinstance(critic.watch(run(), {}, stop), NullWatch)
    clock.t += 10_000
    critic.check()
    assert not stop.requested()
    assert critic.watched() == 0


def test_budget_comes_from_the_request_then_the_agent_then_settings() -> None:
    critic, _, _ = make(runtime_s=100, agent_runtime_s=lambda r: 50 if r.agent == "a" else None)
    assert critic.budget_for(run(**{"executus.runtime_s": "7"})) == 7
    assert critic.budget_for(RunInfo(run_id="x", agent="a")) == 50
    assert critic.budget_for(run()) == 100


def test_a_broken_agent_budget_lookup_falls_back_to_settings() -> None:
    def broken(run: RunInfo) -> float | None:
        raise RuntimeError("registry exploded")

    critic, _, _ = make(runtime_s=100, agent_runtime_s=broken)
    assert critic.budget_for(run()) == 100


def test_backstop_mul_must_exceed_one() -> None:
    with pytest.raises(ValueError, match="backstop_mul must be > 1"):
        TimeoutCritic(backstop_mul=1.0)


# -- the soft deadline and the default policy ----------------------------------------------------


def test_nothing_happens_before_the_soft_deadline() -> None:
    critic, clock, audit = make()
    stop = StopToken()
    critic.watch(run(), {}, stop)
    clock.t += 99.9
    critic.check()
    assert not stop.requested()
    assert audit.events == []


def test_extend_once_extends_the_first_stall_and_kills_the_next() -> None:
    critic, clock, audit = make(ExtendOnce(extend_s=30))
    stop = StopToken()
    watch = critic.watch(run(), {}, stop)
    clock.t += 101
    critic.check()
    assert not stop.requested()
    assert watch.state()["deadline_s"] == 131.0  # extended from now, not from the old deadline
    critic.check()  # the same stall is decided once
    assert audit.decisions("r1") == ["extend"]
    clock.t += 29
    critic.check()
    assert not stop.requested()
    clock.t += 2
    critic.check()
    assert stop.reason() is StopReason.CRITIC
    with pytest.raises(CriticKilled, match="passed its extended deadline"):
        stop.check()
    assert audit.decisions("r1") == ["extend", "kill"]
    assert watch.state()["fired"] == ["extend", "kill"]


def test_extend_once_defaults_to_half_the_budget() -> None:
    critic, clock, _ = make(ExtendOnce())
    watch = critic.watch(run(), {}, StopToken())
    clock.t += 100
    critic.check()
    assert watch.state()["deadline_s"] == 150.0


def test_the_fired_state_is_per_run_never_shared() -> None:
    critic, clock, audit = make(ExtendOnce(extend_s=10))
    a, b = StopToken(), StopToken()
    critic.watch(run("a"), {}, a)
    clock.t += 50
    critic.watch(run("b"), {}, b)  # starts later: its deadline comes later
    clock.t += 51
    critic.check()  # a stalls (101 s) and is extended
    clock.t += 11
    critic.check()  # a stalls again: killed; b is at 62 s
    assert a.reason() is StopReason.CRITIC
    clock.t += 40
    critic.check()  # b's *first* stall: extended, not killed because a was
    assert not b.requested()
    assert audit.decisions("b") == ["extend"]


def test_the_fired_state_survives_a_resume_in_another_process() -> None:
    first, clock, _ = make(ExtendOnce(extend_s=10))
    watch = first.watch(run(), {}, StopToken())
    clock.t += 101
    first.check()
    saved = watch.state()  # what the checkpoint holds
    watch.close()
    assert saved["fired"] == ["extend"]
    assert saved["elapsed_s"] == 101.0

    second, clock2, audit2 = make(ExtendOnce(extend_s=10))  # a fresh worker process
    stop = StopToken()
    second.watch(run(), saved, stop)
    clock2.t += 9.5
    second.check()
    assert not stop.requested()  # the extended deadline (111 s of runtime) still holds
    clock2.t += 1
    second.check()
    assert stop.reason() is StopReason.CRITIC  # no second extension after the resume
    assert audit2.decisions("r1") == ["kill"]


def test_runtime_counts_earlier_attempts_only_by_their_active_time() -> None:
    critic, clock, _ = make(KillOnStall())
    stop = StopToken()
    watch = critic.watch(run(), {"elapsed_s": 90.0}, stop)
    clock.t += 5
    critic.check()
    assert not stop.requested()
    assert watch.state()["elapsed_s"] == 95.0
    clock.t += 6
    critic.check()
    assert stop.reason() is StopReason.CRITIC


# -- decisions -----------------------------------------------------------------------------


def test_kill_returned_with_other_decisions_wins() -> None:
    critic, clock, audit = make(Scripted([Nudge("wrap up"), ExtendBy(60), Kill("enough")]))
    stop = StopToken()
    watch = critic.watch(run(), {}, stop)
    clock.t += 101
    critic.check()
    assert stop.reason() is StopReason.CRITIC
    assert watch.nudges() == []
    assert audit.decisions("r1") == ["kill"]


def test_kill_is_sticky_later_decisions_cannot_extend() -> None:
    policy = Scripted(Kill("first"), ExtendBy(1000))
    critic, clock, _ = make(policy)
    stop = StopToken()
    watch = critic.watch(run(), {}, stop)
    clock.t += 101
    critic.check()
    clock.t += 10
    critic.check()
    assert len(policy.asked) == 1  # a killed run is never asked about again
    assert watch.state()["killed"] == "first"
    assert watch.state()["deadline_s"] == 100.0


def test_a_killed_run_that_comes_back_is_killed_again_at_once() -> None:
    critic, _, _ = make()
    stop = StopToken()
    critic.watch(run(), {"elapsed_s": 120.0, "killed": "runtime passed", "fired": ["kill"]}, stop)
    with pytest.raises(CriticKilled, match="runtime passed"):
        stop.check()


def test_a_nudge_reaches_the_next_step_and_is_delivered_once() -> None:
    critic, clock, audit = make(Scripted([Nudge("please wrap up"), ExtendBy(20)]))
    watch = critic.watch(run(), {}, StopToken())
    clock.t += 101
    critic.check()
    assert audit.decisions("r1") == ["extend", "nudge"]
    watch.step_started(1)
    (message,) = watch.nudges()
    assert (message.role, message.name, message.content) == ("user", "critic", "please wrap up")
    watch.step_finished(1)
    watch.step_started(2)
    assert watch.nudges() == []


def test_a_nudge_whose_step_never_finished_is_delivered_after_resume() -> None:
    critic, clock, _ = make(Scripted([Nudge("wrap up"), ExtendBy(20)]))
    watch = critic.watch(run(), {}, StopToken())
    clock.t += 101
    critic.check()
    watch.step_started(1)
    assert len(watch.nudges()) == 1
    saved = watch.state()  # the attempt ends mid-step (shutdown): what the executor keeps
    watch.close()
    again = critic.watch(run(), saved, StopToken())
    again.step_started(2)
    assert [m.content for m in again.nudges()] == ["wrap up"]


def test_a_stall_answered_without_extension_leaves_only_the_backstop() -> None:
    policy = Scripted(Nudge("wrap up"))
    critic, clock, _ = make(policy)
    stop = StopToken()
    watch = critic.watch(run(), {}, stop)
    clock.t += 101
    critic.check()
    clock.t += 50
    critic.check()
    assert len(policy.asked) == 1
    assert watch.state()["deadline_s"] is None
    assert not stop.requested()
    clock.t += 50  # 201 s: past 2 x 100
    critic.check()
    assert stop.reason() is StopReason.CRITIC


def test_the_policy_sees_the_runs_clocks_and_history() -> None:
    policy = Scripted([ExtendBy(10)])
    critic, clock, _ = make(policy, backstop_mul=3)
    critic.watch(run(), {}, StopToken())
    clock.t += 100
    critic.check()
    clock.t += 11
    critic.check()
    first, second = policy.asked
    assert (first.stalls, first.fired, first.deadline_s) == (1, (), 100.0)
    assert (second.stalls, second.fired, second.deadline_s) == (2, ("extend",), 110.0)
    assert (second.budget_s, second.backstop_s, second.runtime_s) == (100, 300, 111)


# -- a broken policy is contained ----------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        RuntimeError("policy bug"),
        None,
        "extend please",
        [],
        ExtendBy(-5),
        ExtendBy(math.nan),
        [Nudge("")],
        [ExtendBy(10), "junk"],
    ],
)
def test_a_failing_policy_keeps_that_runs_deadline_and_others_watched(
    answer: object, caplog: pytest.LogCaptureFixture
) -> None:
    class PerRun:
        def decide(self, stall: Stall) -> Decision | Sequence[Decision]:
            if stall.run.run_id == "bad":
                if isinstance(answer, Exception):
                    raise answer
                return answer  # type: ignore[return-value]
            return Kill("good policy")

    critic, clock, audit = make(PerRun())
    bad, good = StopToken(), StopToken()
    bad_watch = critic.watch(run("bad"), {}, bad)
    critic.watch(run("good"), {}, good)
    clock.t += 101
    with caplog.at_level(logging.ERROR):
        critic.check()
        critic.check()
    assert not bad.requested()
    assert bad_watch.state()["deadline_s"] == 100.0
    assert bad_watch.state()["stalls"] == 0
    assert good.reason() is StopReason.CRITIC
    failures = [r for r in caplog.records if "escalation policy failed" in r.getMessage()]
    assert len(failures) == 1  # logged once per run, not once per check
    assert audit.decisions("bad") == ["policy_error"]
    clock.t += 100  # the backstop still holds for the run whose policy is broken
    critic.check()
    assert bad.reason() is StopReason.CRITIC


# -- the hard backstop ---------------------------------------------------------------------


def test_the_backstop_kills_whatever_the_policy_says() -> None:
    critic, clock, audit = make(Scripted([ExtendBy(1_000)]), backstop_mul=1.5)
    stop = StopToken()
    watch = critic.watch(run(), {}, stop)
    clock.t += 101
    critic.check()
    assert not stop.requested()
    clock.t += 49
    critic.check()
    with pytest.raises(CriticKilled, match="reached the backstop 150s"):
        stop.check()
    assert audit.decisions("r1") == ["extend", "kill"]
    assert watch.state()["killed"] is not None


def test_a_step_stuck_past_the_backstop_is_interrupted_until_it_ends() -> None:
    interrupted: list[int] = []
    critic, clock, _ = make(KillOnStall(), interrupt=lambda t: interrupted.append(t) or True)
    watch = critic.watch(run(), {}, StopToken())
    watch.step_started(1)
    clock.t += 150
    critic.check()  # soft kill: the step may still end on its own
    assert interrupted == []
    clock.t += 50
    critic.check()  # backstop: cut the step short
    critic.check()  # still stuck (the exception was swallowed): again
    assert len(interrupted) == 2
    assert interrupted[0] == threading.get_ident()  # the run's thread, not the critic's
    watch.step_finished(1)
    critic.check()
    assert len(interrupted) == 2


def test_no_interrupt_between_steps() -> None:
    interrupted: list[int] = []
    critic, clock, _ = make(KillOnStall(), interrupt=lambda t: interrupted.append(t) or True)
    critic.watch(run(), {}, StopToken())
    clock.t += 500
    critic.check()
    assert interrupted == []


# -- lifecycle -----------------------------------------------------------------------------


def test_closed_watches_are_forgotten() -> None:
    critic, clock, _ = make()
    stop = StopToken()
    critic.watch(run(), {}, stop).close()
    clock.t += 1_000
    critic.check()
    assert not stop.requested()
    assert critic.watched() == 0


def test_one_broken_entry_does_not_stop_the_check_of_the_others() -> None:
    critic, clock, _ = make(KillOnStall())
    broken, ok = StopToken(), StopToken()
    critic.watch(run("broken"), {}, broken)
    critic.watch(run("ok"), {}, ok)

    def explode(*args: object, **kw: object) -> None:
        raise RuntimeError("token broken")

    broken.request = explode  # type: ignore[method-assign]
    clock.t += 101
    critic.check()
    assert ok.reason() is StopReason.CRITIC


def test_background_thread_starts_and_stops() -> None:
    critic = TimeoutCritic(tick_s=0.01)
    critic.start()
    critic.close()
    assert critic._thread is None
