"""A rediss:// broker goes through the hardened transport, and TLS keeps working.

kombu enables TLS from the transport name 'rediss'; naming our transport instead must not
silently downgrade to plaintext (the TLS endpoint would refuse it) nor drop the URL's
certificate options. The endpoint here is a real TLS terminator in front of the test's Redis.
"""

from __future__ import annotations

import time

import pytest
from e2e.harness import Cluster

from .redis_server import RedisServer
from .tls import TlsTerminator
from .workers import assert_completed_exactly, assert_keeps_consuming, wait_for_progress

pytestmark = pytest.mark.faults

HARDENED = "executus_worker.worker.transport:Transport"


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "kombu-default"])
def test_a_rediss_broker_uses_the_hardened_transport_over_tls_and_rides_a_reset(
    fault_redis: RedisServer, fault_cluster: Cluster, verify: bool
) -> None:
    cluster = fault_cluster
    with TlsTerminator(fault_redis.port) as tls:
        cluster.settings["EXECUTUS_BROKER_URL"] = tls.url(verify=verify)
        worker = cluster.start("threads", concurrency=3)
        assert f"Connected to {HARDENED}://" in worker.text()
        assert tls.handshakes > 0  # the broker traffic really is TLS
        in_flight = [cluster.submit("e2e.counter", steps=10, step_s=0.2) for _ in range(2)]
        for run_id in in_flight:
            cluster.wait_steps_ended(run_id, 2)

        handshakes = tls.handshakes
        tls.reset()  # every TLS connection dropped while runs are in flight
        reset_at = time.time()
        wait_for_progress(cluster, in_flight, [worker], since=reset_at, timeout_s=30)
        assert_completed_exactly(cluster, dict.fromkeys(in_flight, 10), [worker], timeout_s=30)
        assert_keeps_consuming(cluster, worker)
        assert tls.handshakes > handshakes  # it reconnected over TLS
        assert ("without certificate verification" in worker.text()) is not verify
