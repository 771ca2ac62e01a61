"""Lease renewal cost: one pipelined round trip per process per interval, whatever it holds.

N runs (1, 10, 100, 1,000) are claimed by one "process"; ``RedisStore.renew_many`` renews all
of them in one pipelined round trip, as the heartbeat thread does every ``lease_ttl_s / 3``.
Reported: the round trip's wall time (median of 50), the Redis server time per renewal
(``INFO commandstats``: usec per EVALSHA call), and what 1,000 running runs cost Redis at the
default lease (30 s, so a renewal every 10 s): commands per second and server CPU share.

    python bench/renew_bench.py [--sizes 1,10,100,1000] [--reps 50] [--no-write]

Writes the ``## Renewal cost`` section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import redis
from results import Machine, Target, med_range, write_section

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence
from executus_worker.core.models import RunRequest
from executus_worker.embedded import EmbeddedRedis

DEFAULT_INTERVAL_S = 30.0 / 3


def claimed(store: RedisStore, n: int, tag: str) -> list[tuple[str, Fence]]:
    leases = []
    for i in range(n):
        run_id = f"{tag}-{i}"
        store.register(RunRequest(agent="bench"), run_id=run_id, queue="q", now=time.time())
        claim = store.claim(run_id, owner="bench", lease_ttl_s=600, max_attempts=5, now=1.0)
        assert claim.fence is not None
        leases.append((run_id, claim.fence))
    return leases


def evalsha_usec(client: redis.Redis) -> tuple[int, float, int]:
    """(EVALSHA calls, their server usec, calls of every command): INFO commandstats."""
    stats: dict[str, Any] = client.info("commandstats")
    row = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    total = sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    return int(row["calls"]), float(row["usec"]), total


def measure(client: redis.Redis, sizes: Sequence[int], reps: int) -> list[dict[str, float]]:
    store = RedisStore(client, key_prefix="renewbench")
    rows = []
    for n in sizes:
        leases = claimed(store, n, f"n{n}")
        store.renew_many(leases, lease_ttl_s=30)  # warm: scripts loaded
        calls0, usec0, all0 = evalsha_usec(client)
        samples = []
        for _ in range(reps):
            t = time.perf_counter()
            replies = store.renew_many(leases, lease_ttl_s=30)
            samples.append(time.perf_counter() - t)
            assert all(r.value == "ok" for r in replies if not isinstance(r, Exception))
        calls1, usec1, all1 = evalsha_usec(client)
        per_call_us = (usec1 - usec0) / max(1, calls1 - calls0)
        rows.append(
            {
                "n": n,
                "round_trip_ms": statistics.median(samples) * 1e3,
                "range_ms": med_range(samples, scale=1e3),
                "server_us_per_renewal": per_call_us,
                "commands_per_renewal": (all1 - all0) / reps,
                "scripts_per_renewal": (calls1 - calls0) / reps,
            }
        )
        client.delete(*client.keys("renewbench:*"))
    return rows


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    machine = Machine.capture()
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        version = client.info("server")["redis_version"]
        rows = measure(client, sizes, args.reps)
    machine.finish(redis_version=version)
    lines = [
        f"`python bench/renew_bench.py --reps {args.reps}`, private redis-server on loopback. "
        "N leases held by one process, renewed by `RedisStore.renew_many` in one pipelined "
        "round trip (what the heartbeat thread sends every `lease_ttl_s / 3`).",
        "",
        "| leases held by one process | one renew_many round trip, median (min-max) ms | "
        "scripts per round trip | Redis commands executed per round trip (inside scripts "
        "too) | Redis server time per renewal script, us |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['n']:,} | {r['range_ms']} | {r['scripts_per_renewal']:,.0f} "
        f"| {r['commands_per_renewal']:,.0f} "
        f"| {r['server_us_per_renewal']:.1f} |"
        for r in rows
    ]
    biggest = rows[-1]
    per_s = biggest["commands_per_renewal"] / DEFAULT_INTERVAL_S
    per_1000 = per_s * 1_000 / biggest["n"]
    cpu = biggest["n"] / DEFAULT_INTERVAL_S * biggest["server_us_per_renewal"] / 1e6
    cpu_1000 = cpu * 1_000 / biggest["n"]
    lines += [
        "",
        f"At the default lease (30 s, a renewal every {DEFAULT_INTERVAL_S:.0f} s), 1,000 running "
        f"runs held by one process cost Redis {per_1000:.0f} commands/s (one RENEW script per "
        f"lease, the calls inside it, one ZADD per round trip) and {cpu_1000 * 100:.2f}% of "
        "one core; the "
        "process sends one round trip per interval whatever the number of runs it holds. "
        "On the prefork pool each child holds one run, so there it is two commands per run "
        "per interval (bench/capacity_bench.py measures a whole Redis under that load).",
    ]
    text = "\n".join(lines)
    print(text)
    target = Target(
        "renewal.cost",
        f"{per_1000:.0f} commands/s and {cpu_1000 * 100:.2f}% of a Redis core per 1,000 "
        f"running runs; 1 round trip per interval for 1 to {biggest['n']:,} leases",
        None,
    )
    if not args.no_write:
        write_section("Renewal cost", text, machine, [target])
        print("wrote the Renewal cost section of bench/RESULTS.md")
    return text


if __name__ == "__main__":
    main()
