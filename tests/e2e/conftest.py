"""Fixtures for the real-process suite: one Cluster per test, and the measured timings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster


@pytest.fixture
def cluster(redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    world = Cluster(redis_url, tmp_path)
    yield world
    world.close()
