"""Which model-call failures are worth another try, and how long to wait before it.

Retried: 429 (rate limited), 408 and 409 (the server's own "try again"), every 5xx, timeouts
and dropped connections. Not retried: the rest of 4xx -- a bad key (401), a forbidden model
(403), an unknown model (404) or a request the server rejects (400) fails the same way again.

Waits grow 0.5 s, 1 s, 2 s, ... up to ``max_delay_s``, each with jitter (so workers that were
throttled together do not come back together), unless the server said how long to wait
(``retry-after-ms`` or ``retry-after``): that is honoured up to ``max_retry_after_s``, and a
longer wait (an exhausted quota) is not waited out inside a run step -- the call fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from executus_worker.models.sdk import sdk

_RETRY_STATUSES = frozenset({408, 409, 429})


def retryable(exc: BaseException) -> bool:
    api = sdk()
    if isinstance(exc, api.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, api.APIStatusError):
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return False


def retry_after_s(exc: BaseException) -> float | None:
    """The wait the server asked for, if it asked (seconds)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue  # an HTTP date: rare enough to fall back to our own backoff
        if seconds >= 0:
            return seconds
    return None


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 60.0
    jitter: Callable[[], float] = field(default=random.random)

    def delay_s(self, retry: int, exc: BaseException) -> float | None:
        """The wait before retry number ``retry`` (0-based) after ``exc``; None: give up."""
        asked = retry_after_s(exc)
        if asked is not None:
            return asked if asked <= self.max_retry_after_s else None
        ceiling = min(self.max_delay_s, self.base_s * 2.0**retry)
        # Between half and all of the ceiling ("equal jitter"): never zero, never above it.
        return ceiling * (0.5 + 0.5 * self.jitter())
