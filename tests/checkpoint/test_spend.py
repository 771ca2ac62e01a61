"""Spend counters on a real Redis: per run across calls, per guild per day, with TTLs."""

from __future__ import annotations

import pytest
import redis

from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.spend import GUILD_DAY_TTL_S, RedisSpendLedger
from executus_worker.core.ports import Usage

pytestmark = pytest.mark.redis

KEYS = KeySchema("spend")


def test_adds_return_the_running_totals(redis_client: redis.Redis) -> None:
    ledger = RedisSpendLedger(redis_client, KEYS, run_ttl_s=60)
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=0.25)
    assert ledger.add("r1", "g1", "2026-05-01", usage) == ((15, 0.25), (15, 0.25))
    assert ledger.add("r2", "g1", "2026-05-01", usage) == ((15, 0.25), (30, 0.5))
    assert ledger.add("r1", None, "2026-05-01", usage) == ((30, 0.5), None)
    assert ledger.totals("r1", "g1", "2026-05-01") == ((30, 0.5), (30, 0.5))
    assert ledger.totals("r1", "g1", "2026-05-02") == ((30, 0.5), (0, 0.0))
    assert ledger.totals("never", None, "2026-05-01") == ((0, 0.0), None)
    assert ledger.run_spend("r1") == {
        "input_tokens": 20, "output_tokens": 10, "tokens": 30, "cost_usd": 0.5,
    }  # fmt: skip
    assert ledger.run_spend("never") == {}


def test_every_counter_expires(redis_client: redis.Redis) -> None:
    ledger = RedisSpendLedger(redis_client, KEYS, run_ttl_s=60)
    ledger.add("r1", "g1", "2026-05-01", Usage(input_tokens=1))
    assert 0 < redis_client.ttl(KEYS.spend("r1")) <= 60
    assert 0 < redis_client.ttl(KEYS.guild_spend("g1", "2026-05-01")) <= GUILD_DAY_TTL_S
