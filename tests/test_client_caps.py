"""The client applies the request caps before it parses, encodes or registers anything."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from executus_worker.client import Client
from executus_worker.errors import PayloadError, ScheduleError

pytestmark = pytest.mark.redis


def nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def test_a_deeply_nested_input_is_refused_and_nothing_is_registered(
    redis_url: str, redis_client: redis.Redis
) -> None:
    with Client.from_url(redis_url) as client:
        with pytest.raises(PayloadError, match="nests deeper than 100 levels"):
            client.enqueue(agent="demo.counter", input={"x": nested(100_000)}, run_id="deep1")
        deep_text = '{"agent": "demo.counter", "input": {"x": ' + "[" * 100_000 + "}}"
        with pytest.raises(PayloadError, match="nests deeper than 100 levels"):
            client.submit(deep_text)
        with pytest.raises(ScheduleError, match="nests deeper than 100 levels"):
            client.add_schedule(
                {"name": "deep", "cron": "* * * * *", "run": {"agent": "a", "input": nested(500)}}
            )
        assert client.runs() == []
    assert redis_client.llen("executus") == 0
