"""Per-run limits a request carries in its ``metadata`` (string values, so the public
``RunRequest`` schema stays as it is):

    executus.runtime_s      the run's runtime budget: active seconds across all its attempts,
                            the critic's soft deadline (its backstop is a multiple of it)
    executus.max_tokens     tokens (input + output) across all attempts (budget battery)
    executus.max_cost_usd   model cost in USD across all attempts (budget battery)

A request can only tighten what the operator configured: the budget battery applies the lower
of the request's and the settings' limit. ``RunRequest`` validates these keys, so a bad value is
rejected at enqueue with the key named, never discovered by a worker later.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

RUNTIME_S = "executus.runtime_s"
MAX_TOKENS = "executus.max_tokens"
MAX_COST_USD = "executus.max_cost_usd"

KNOWN = (RUNTIME_S, MAX_TOKENS, MAX_COST_USD)


def parse_limit(key: str, raw: str) -> float:
    """The positive, finite number in ``raw``; ValueError naming ``key`` otherwise."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"metadata[{key!r}] must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"metadata[{key!r}] must be a positive number, got {raw[:40]!r}")
    if key == MAX_TOKENS and value != int(value):
        raise ValueError(f"metadata[{key!r}] must be a whole number of tokens, got {raw[:40]!r}")
    return value


def check_metadata(metadata: Mapping[str, str]) -> None:
    """Raise ValueError for the first known limit key whose value is not a positive number."""
    for key in KNOWN:
        if key in metadata:
            parse_limit(key, metadata[key])


def metadata_limit(metadata: Mapping[str, str], key: str) -> float | None:
    """The limit under ``key``, or None when absent (or, defensively, unparseable: requests
    are validated at the door, so a bad value here came from a hand-built RunInfo)."""
    raw = metadata.get(key)
    if raw is None:
        return None
    try:
        return parse_limit(key, raw)
    except ValueError:
        return None
