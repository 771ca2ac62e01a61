"""Spend counters in Redis for the budget battery: per run across all its attempts, and per
guild per UTC day.

    <prefix>:{run:<id>}:spend                  hash  input_tokens, output_tokens, tokens, cost_usd
    <prefix>:spend:{guild:<g>}:<yyyy-mm-dd>    hash  the same fields, for every run of the guild

Both are plain counters (HINCRBY / HINCRBYFLOAT) bumped in one pipelined round trip per model
step; the reply is the new totals, which is what the battery compares with its limits. Each key
gets a TTL on every write: a run's spend lives ``ttl_s`` after its last step (default: the run
retention), a guild's day two days after it began. Spend is counted when it happens, not when a
checkpoint commits it: a step that ran twice (a crash before its checkpoint) was paid twice.
"""

from __future__ import annotations

from typing import Any

import redis

from executus_worker.checkpoint.keys import KeySchema
from executus_worker.core.ports import Usage
from executus_worker.errors import StoreError
from executus_worker.redis_connect import StateClient

GUILD_DAY_TTL_S = 2 * 86_400


class RedisSpendLedger:
    """Implements ``batteries.budget.SpendLedger`` on Redis counters."""

    def __init__(self, client: StateClient, keys: KeySchema, *, run_ttl_s: int = 86_400) -> None:
        self._r = client
        self.keys = keys
        self._run_ttl_s = run_ttl_s

    def add(
        self, run_id: str, guild_id: str | None, day: str, usage: Usage
    ) -> tuple[tuple[int, float], tuple[int, float] | None]:
        """Add one step's usage; (run tokens, run cost), (guild tokens, guild cost) after it."""
        tokens = usage.input_tokens + usage.output_tokens
        pipe = self._r.pipeline(transaction=False)
        keys = [(self.keys.spend(run_id), self._run_ttl_s)]
        if guild_id is not None:
            keys.append((self.keys.guild_spend(guild_id, day), GUILD_DAY_TTL_S))
        for key, ttl_s in keys:
            pipe.hincrby(key, "input_tokens", usage.input_tokens)
            pipe.hincrby(key, "output_tokens", usage.output_tokens)
            pipe.hincrby(key, "tokens", tokens)
            pipe.hincrbyfloat(key, "cost_usd", usage.cost_usd)
            pipe.expire(key, ttl_s)
        try:
            reply: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"adding spend of run {run_id!r} failed: {exc}") from exc
        run_totals = (int(reply[2]), float(reply[3]))
        guild_totals = (int(reply[7]), float(reply[8])) if guild_id is not None else None
        return run_totals, guild_totals

    def totals(
        self, run_id: str, guild_id: str | None, day: str
    ) -> tuple[tuple[int, float], tuple[int, float] | None]:
        pipe = self._r.pipeline(transaction=False)
        pipe.hmget(self.keys.spend(run_id), ["tokens", "cost_usd"])
        if guild_id is not None:
            pipe.hmget(self.keys.guild_spend(guild_id, day), ["tokens", "cost_usd"])
        try:
            reply: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"reading spend of run {run_id!r} failed: {exc}") from exc
        run_totals = _pair(reply[0])
        return run_totals, (_pair(reply[1]) if guild_id is not None else None)

    def run_spend(self, run_id: str) -> dict[str, float]:
        """A run's counters (input_tokens, output_tokens, tokens, cost_usd); {} if none."""
        try:
            raw: dict[Any, Any] = self._r.hgetall(self.keys.spend(run_id))
        except redis.RedisError as exc:
            raise StoreError(f"reading spend of run {run_id!r} failed: {exc}") from exc
        out: dict[str, float] = {}
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else str(key)
            number = float(value)
            out[name] = number if name == "cost_usd" else int(number)
        return out


def _pair(values: list[Any]) -> tuple[int, float]:
    tokens, cost = values
    return int(tokens or 0), float(cost or 0.0)
