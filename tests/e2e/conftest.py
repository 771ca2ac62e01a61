"""Fixtures for the real-process suite: one Cluster per test, and the measured timings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster

_TIMINGS: list[tuple[str, float]] = []


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(redis_url, tmp_path)
    yield world
    world.close()


@pytest.fixture
def timing(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Record a measured number; the suite prints them all at the end."""

    def record(what: str, seconds: float) -> None:
        _TIMINGS.append((f"{request.node.name}: {what}", seconds))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _TIMINGS:
        terminalreporter.section("e2e timings")
        for what, seconds in _TIMINGS:
            terminalreporter.write_line(f"{seconds:7.2f}s  {what}")
