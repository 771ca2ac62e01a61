"""Which Redis the demo uses: the given URL, else ``EXECUTUS_REDIS_URL``, else a local Redis
on 127.0.0.1:6379, else a private embedded redis-server (started here, stopped by the caller).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from executus_worker.embedded import EmbeddedRedis, redis_answers
from executus_worker.settings import redact_url

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 6379


@dataclass(frozen=True)
class ResolvedRedis:
    url: str
    description: str
    embedded: EmbeddedRedis | None = None

    def stop(self) -> str | None:
        """Stop the embedded server if this started one; says what it did."""
        if self.embedded is None:
            return None
        pid = self.embedded.pid
        self.embedded.stop()
        return f"stopped the embedded redis-server (pid {pid})"


def resolve_redis(
    redis_url: str | None,
    env: dict[str, str] | None = None,
    answers: Callable[[str, int], bool] = redis_answers,
) -> ResolvedRedis:
    """Which Redis to use; starts the embedded one only as the last resort."""
    environ = dict(os.environ) if env is None else env
    if redis_url:
        return ResolvedRedis(redis_url, f"given URL {redact_url(redis_url)}")
    if environ.get("EXECUTUS_REDIS_URL"):
        url = environ["EXECUTUS_REDIS_URL"]
        return ResolvedRedis(url, f"EXECUTUS_REDIS_URL={redact_url(url)}")
    if answers(LOCAL_HOST, LOCAL_PORT):
        return ResolvedRedis(
            f"redis://{LOCAL_HOST}:{LOCAL_PORT}/0", f"local Redis at {LOCAL_HOST}:{LOCAL_PORT}"
        )
    server = EmbeddedRedis()
    url = server.start()
    source = f"embedded redis-server from {server.source}, pid {server.pid}"
    return ResolvedRedis(url, f"{source} at {url}", server)
