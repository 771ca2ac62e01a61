"""An enqueue whose reply is lost: the run is registered with its message and its event, or
not at all -- never registered without a message -- and the retry adds nothing.

The proxy delivers the request and eats the reply (``mute``): the register script ran on the
real server and the client cannot know. Before the one-round-trip enqueue, this left the run
registered with no message (the client raised before publishing) until the sweep noticed it
``queued_timeout_s`` later.
"""

from __future__ import annotations

import uuid

import pytest
import redis

from executus_worker.client import Client
from executus_worker.errors import StoreError
from executus_worker.settings import Settings

from .proxy import TcpProxy
from .redis_server import RedisServer

pytestmark = pytest.mark.faults


def test_an_enqueue_whose_reply_is_lost_is_whole_and_its_retry_adds_nothing(
    fault_redis: RedisServer,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    direct = redis.Redis(port=fault_redis.port)
    with TcpProxy(fault_redis.port, lifetime_s=60) as proxy:
        # State and broker through the same proxy (one server): the enqueue is one script.
        url = proxy.url() + "?socket_timeout=0.5"
        settings = Settings(
            redis_url=url, key_prefix="atomic", default_queue=queue, check_agents_on_enqueue=False
        )
        with Client(settings) as client:
            client.enqueue(agent="demo.counter", input={"steps": 1}, run_id="warm-up")
            request = {"agent": "demo.counter", "input": {"steps": 2}, "run_id": "lost-reply"}
            proxy.set_mode("mute")
            with pytest.raises(StoreError):
                client.submit(request)

            def messages_for(run_id: str) -> int:
                return sum(run_id.encode() in raw for raw in direct.lrange(queue, 0, -1))

            # The script ran whole on the server (redis-py's own retries found it registered).
            assert direct.hget("atomic:{run:lost-reply}:rec", "status") == b"queued"
            assert messages_for("lost-reply") == 1
            assert direct.xlen("atomic:{run:lost-reply}:events") == 1

            proxy.set_mode("pass")
            again = client.submit(request)  # the caller's retry of the same enqueue
            assert again.created is False
            assert messages_for("lost-reply") == 1
            assert [e.event for e in client.events("lost-reply")] == ["enqueued"]
    direct.close()
