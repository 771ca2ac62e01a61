"""The periodic recovery sweep inside beat, on a fake monotonic clock."""

from __future__ import annotations

import pytest

from beat.sweep import PeriodicSweep


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_sweeps_at_once_then_every_interval() -> None:
    clock, calls = Clock(), []
    sweep = PeriodicSweep(lambda: calls.append(clock.t), interval_s=30, clock=clock)
    assert sweep.run_if_due() == pytest.approx(30)
    clock.t += 10
    assert sweep.run_if_due() == pytest.approx(20)
    clock.t += 20
    sweep.run_if_due()
    assert calls == [100.0, 130.0]


def test_a_failing_sweep_is_logged_and_retried_one_interval_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()

    def boom() -> None:
        raise ConnectionError("redis down")

    sweep = PeriodicSweep(boom, interval_s=30, clock=clock)
    assert sweep.run_if_due() == pytest.approx(30)  # no tight retry loop
    assert sweep.run_if_due() == pytest.approx(30)
    assert (sweep.runs, sweep.failures) == (1, 1)
    assert "recovery sweep failed" in caplog.text


def test_a_slow_sweep_does_not_stretch_the_interval() -> None:
    clock = Clock()

    def slow() -> None:
        clock.t += 12

    sweep = PeriodicSweep(slow, interval_s=30, clock=clock)
    assert sweep.run_if_due() == pytest.approx(18)
