"""One real API server per module (its own key prefix and queue on the session's Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import ApiServer


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with a token and the live-agent check off (no worker serves these tests)."""
    log = tmp_path_factory.mktemp("api") / "api.log"
    server = ApiServer(redis_url, log, env={"EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false"})
    server.start()
    yield server
    server.stop()
