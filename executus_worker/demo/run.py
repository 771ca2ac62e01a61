"""``run_story``: the live demo from Redis resolution to the last key deleted."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import redis

from executus_worker.demo.resolve import resolve_redis
from executus_worker.demo.story import DemoFailure, Display, Story
from executus_worker.errors import ConfigError, ExecutusError
from executus_worker.settings import redact_url

EXIT_OK, EXIT_FAILED, EXIT_NO_REDIS, EXIT_INTERRUPTED = 0, 1, 2, 130

DisplayFactory = Callable[[Callable[[str], str]], AbstractContextManager[Display]]


def run_story(
    redis_url: str | None,
    display: DisplayFactory,
    say: Callable[[str], None],
    stop: threading.Event,
) -> int:
    """Play the story. ``display(owner_label)`` opens the live view; ``say`` prints a line;
    ``stop`` set (Ctrl-C) ends it early, still stopping and deleting everything it started."""
    try:
        resolved = resolve_redis(redis_url)
    except ConfigError as exc:  # no Redis configured, none local, no redis-server to start
        say(f"No Redis for the demo: {exc}")
        return EXIT_NO_REDIS
    try:
        redis.Redis.from_url(resolved.url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        say(f"Cannot reach Redis at {redact_url(resolved.url)}: {exc}")
        resolved.stop()
        return EXIT_NO_REDIS
    say(f"Redis: {resolved.description}")
    code = EXIT_FAILED
    with tempfile.TemporaryDirectory(prefix="executus-demo-") as workdir:
        story = Story(resolved.url, Path(workdir), stop)
        try:
            with display(story.owner_label) as view:
                finished = story.play(view)
            if not finished:
                code = EXIT_INTERRUPTED
            elif story.report(say):
                code = EXIT_OK
        except (DemoFailure, ExecutusError, redis.RedisError, OSError) as exc:
            say(f"FAILED: {exc}")
            for child in story.fleet.children:
                say(f"--- {child.label} log tail:\n{child.tail()}")
        finally:
            for line in story.close():
                say(line)
            stopped = resolved.stop()
            if stopped:
                say(stopped)
    return code
