"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
import redis


@pytest.fixture
def env(redis_url: str, redis_client: redis.Redis) -> dict[str, str]:
    # No worker runs in these tests: enqueue's live-agent check is tested in test_agents.py.
    return {"EXECUTUS_REDIS_URL": redis_url, "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false"}
