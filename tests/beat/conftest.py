"""Fixtures for the beat tests (helpers live in ``beat_world.py``).

pytest's default "prepend" import mode puts ``tests/`` on ``sys.path``, where this directory
would be found as a namespace package ``beat`` and shadow the real top-level ``beat`` package
(a regular package elsewhere on ``sys.path`` wins, but the repo root is not on it: the project
is installed through an editable finder that runs after the path finder). So put the repo root
on the path before anything imports ``beat``, and check that it worked.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import beat  # noqa: E402

assert Path(beat.__file__ or "").parent == ROOT / "beat", f"tests import the wrong beat: {beat}"

from collections.abc import Iterator  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import pytest  # noqa: E402
import redis  # noqa: E402
from beat_world import World  # noqa: E402


@pytest.fixture
def world(redis_client: redis.Redis, redis_url: str) -> Iterator[World]:
    w = World(redis_client, redis_url, datetime(2026, 5, 1, 11, 59, 30, tzinfo=UTC))
    yield w
