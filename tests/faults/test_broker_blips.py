"""A broker blip through a proxy the test controls, with runs in flight.

The workers reach Redis through ``TcpProxy``: the broker only (the run store direct), or both.
The proxy resets every connection and refuses new ones for a moment, then lets traffic pass
again -- a Redis failover or a load balancer dropping its connections. The invariant: runs in
flight finish with exact transcripts, none ends dead, and the workers keep consuming.
"""

from __future__ import annotations

import time

import pytest
from e2e.harness import Cluster

from .proxy import TcpProxy
from .redis_server import RedisServer
from .workers import (
    assert_completed_exactly,
    assert_keeps_consuming,
    assert_one_owner_at_a_time,
    wait_for_progress,
)

pytestmark = pytest.mark.faults

STEPS = 16
STEP_S = 0.25
BLIP_S = 1.5


@pytest.mark.parametrize(
    ("pool", "route"),
    [("prefork", "broker"), ("threads", "broker"), ("prefork", "both")],
    ids=["prefork-broker", "threads-broker", "prefork-both"],
)
def test_runs_in_flight_survive_a_broker_blip_and_workers_keep_consuming(
    fault_redis: RedisServer, fault_cluster: Cluster, pool: str, route: str, timing
) -> None:
    cluster = fault_cluster
    with TcpProxy(fault_redis.port, lifetime_s=120) as proxy:
        cluster.settings["EXECUTUS_BROKER_URL"] = proxy.url()
        if route == "both":
            cluster.settings["EXECUTUS_REDIS_URL"] = proxy.url()
        worker = cluster.start(pool, concurrency=3)
        in_flight = [cluster.submit("e2e.counter", steps=STEPS, step_s=STEP_S) for _ in range(2)]
        for run_id in in_flight:
            cluster.wait_steps_ended(run_id, 2)
        assert proxy.connections() > 0  # the worker's traffic really goes through the proxy

        started = time.monotonic()
        proxy.set_mode("reset")
        time.sleep(BLIP_S)
        proxy.set_mode("pass")
        healed_at = time.time()

        wait_for_progress(cluster, in_flight, [worker], since=healed_at, timeout_s=30)
        assert_completed_exactly(cluster, dict.fromkeys(in_flight, STEPS), [worker], timeout_s=45)
        timing(f"{pool} via proxy ({route}): runs done after the blip", time.monotonic() - started)
        assert_one_owner_at_a_time(cluster, in_flight)
        # Duplicates are fenced by the claim, so a broker blip never kills a run in flight.
        assert "Terminating it instead" not in worker.text()
        assert_keeps_consuming(cluster, worker)
        assert "Connection to broker lost" in worker.text()  # the blip did reach the consumer
