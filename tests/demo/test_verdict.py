"""The demo's verdict: one owner at a time, checked from the step trace (no Redis needed)."""

from __future__ import annotations

from executus_worker.demo.agents import COUNTER, PHASED, Step
from executus_worker.demo.story import expected_transcript
from executus_worker.demo.verdict import claims_text, judge, ownership_conflicts


def step(msg: str, epoch: int, t0: float, t1: float, pid: int = 0) -> Step:
    return Step("r", epoch, pid or 100 + epoch, msg, t0, t1)


def test_a_clean_handover_with_a_re_run_step_is_no_conflict() -> None:
    steps = [
        step("step 1", 1, 0.0, 1.0),
        step("step 2", 1, 1.0, 2.0),  # its checkpoint was lost with its owner
        step("step 2", 2, 5.0, 6.0),
        step("step 3", 2, 6.0, 7.0),
    ]
    verdict = judge("r", "completed", ["step 1", "step 2", "step 3"],
                    ["step 1", "step 2", "step 3"], steps)  # fmt: skip
    assert verdict.conflicts == []
    assert verdict.ok
    assert verdict.reruns == 1


def test_overlapping_steps_of_two_claims_are_a_conflict() -> None:
    problems = ownership_conflicts([step("step 2", 1, 0.0, 2.0), step("step 3", 2, 1.5, 2.5)])
    assert any("overlapped" in p for p in problems)


def test_a_stale_owner_stepping_after_a_takeover_is_a_conflict_even_without_overlap() -> None:
    steps = sorted(
        [step("step 2", 2, 1.0, 1.5), step("step 3", 1, 2.0, 2.5), step("step 3", 2, 3.0, 3.5)],
        key=lambda s: s.t0,
    )
    problems = ownership_conflicts(steps)
    assert problems == ["'step 3' of epoch 1 (pid 101) started after epoch 2 had taken over"]


def test_steps_of_one_claim_may_follow_each_other_closely() -> None:
    assert ownership_conflicts([step("step 1", 1, 0.0, 1.0), step("step 2", 1, 0.9, 2.0)]) == []


def test_a_wrong_transcript_or_status_fails_the_run() -> None:
    assert not judge("r", "completed", ["step 1"], ["step 1", "step 1"], []).ok
    assert not judge("r", "failed", ["step 1"], ["step 1"], []).ok


def test_claims_text_names_each_claim_and_its_steps() -> None:
    steps = [step("step 1", 1, 0, 1), step("step 2", 1, 1, 2), step("step 3", 2, 3, 4)]
    text = claims_text(steps, lambda pid: f"pid{pid}")
    assert text == "epoch 1 pid101: step 1 .. step 2; epoch 2 pid102: step 3"


def test_expected_transcripts_of_the_demo_agents() -> None:
    assert expected_transcript(COUNTER, {"steps": 3}) == ["step 1", "step 2", "step 3"]
    assert expected_transcript(PHASED, {"phases": ["a", "b"], "steps": 2}) == [
        "a step 1", "a step 2", "b step 1", "b step 2"
    ]  # fmt: skip


def test_two_claims_with_the_same_epoch_are_still_told_apart_by_their_fence() -> None:
    """After Redis lost writes an epoch can repeat; the fence token never does."""
    a = Step("r", 1, 101, "step 2", 0.0, 2.0, fence="aaa")
    b = Step("r", 1, 102, "step 2", 1.0, 3.0, fence="bbb")
    assert any("overlapped" in p for p in ownership_conflicts([a, b]))
