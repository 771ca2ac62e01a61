"""Recovery benchmark: one sweep finds and re-publishes 10,000 interrupted runs (target < 1 s).

Starts a private redis-server, registers N runs and leaves each one `interrupted` (a warm
shutdown's state), then times ``Recovery.sweep()``: walking the active index in batches, the
per-run compare-and-set back to `queued`, and publishing every message through the batch
publisher. Checks that the broker queue holds exactly N messages. For comparison it also times
publishing the same messages one round trip each (what ``send_task`` in a loop costs at least).

    .venv/bin/python bench/recovery_bench.py [--runs 10000] [--repeats 3] [--no-write]

Writes its table under ``## Recovery`` in bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path

import redis

from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.models import RunRequest
from executus_worker.embedded import EmbeddedRedis
from executus_worker.publish import BatchPublisher, RunMessage
from executus_worker.worker.recovery import Recovery, ScanLock

RESULTS = Path(__file__).with_name("RESULTS.md")
QUEUE = "executus"
TARGET_S = 1.0


def prepare(client: redis.Redis, prefix: str, n: int) -> RedisStore:
    store = RedisStore(client, key_prefix=prefix)
    now = time.time()
    for i in range(n):
        run_id = f"bench-{i:06d}"
        request = RunRequest(run_id=run_id, agent="demo.counter", input={"steps": 5, "step_s": 0.1})
        store.register(request, run_id=run_id, queue=QUEUE, now=now)
        claim = store.claim(run_id, owner="bench:1", lease_ttl_s=60, max_attempts=5, now=now)
        assert claim.fence is not None
        store.interrupt(run_id, fence=claim.fence, now=now)
    return store


def one_sweep(client: redis.Redis, prefix: str, n: int) -> dict[str, float]:
    client.flushall()
    store = prepare(client, prefix, n)
    recovery = Recovery(
        store,
        BatchPublisher(client),
        queued_timeout_s=900,
        lock=ScanLock(client, f"{prefix}:recover:lock"),
    )
    started = time.perf_counter()
    report = recovery.sweep()
    elapsed = time.perf_counter() - started
    queued = client.llen(QUEUE)
    if report.published != n or queued != n or report.errors:
        raise SystemExit(f"sweep published {report.published}, queue holds {queued}, want {n}")
    return {"sweep_s": elapsed, "store_s": report.store_s, "publish_s": report.publish_s}


def one_by_one(client: redis.Redis, n: int) -> float:
    client.delete(QUEUE)
    publisher = BatchPublisher(client, batch_size=1)
    request_json = RunRequest(agent="demo.counter").to_json()
    started = time.perf_counter()
    for i in range(n):
        publisher.publish_many([RunMessage(f"one-{i}", request_json, QUEUE)])
    return time.perf_counter() - started


def write_results(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Recovery\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        # Keep one blank line before whatever section follows ours.
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        rounds = [one_sweep(client, "bench", args.runs) for _ in range(args.repeats)]
        single_n = min(args.runs, 2_000)
        single_s = one_by_one(client, single_n)
        client.close()

    sweeps = [r["sweep_s"] for r in rounds]
    median = statistics.median(sweeps)
    store_s = statistics.median(r["store_s"] for r in rounds)
    publish_s = statistics.median(r["publish_s"] for r in rounds)
    per_msg_single_us = single_s / single_n * 1e6
    verdict = "PASS" if median < TARGET_S else "FAIL"
    print(f"sweep + publish of {args.runs} runs: median {median:.3f}s {sorted(sweeps)} {verdict}")
    print(f"store sweep {store_s:.3f}s, publish {publish_s:.3f}s (medians)")
    print(f"one round trip per message: {per_msg_single_us:.0f} us/message")
    section = (
        "## Recovery\n\n"
        f"`bench/recovery_bench.py` -- one `Recovery.sweep()` over {args.runs:,} interrupted runs\n"
        "(walk the active index in batches of 1,000, per-run CAS back to `queued` in Lua,\n"
        "publish every `executus.run` message with the pipelined batch publisher), private\n"
        f"redis-server on loopback, {platform.python_implementation()} "
        f"{platform.python_version()}, {args.repeats} repeats on a fresh dataset each.\n\n"
        "| measure | result |\n|---|---|\n"
        f"| sweep + publish, median | **{median:.3f} s** ({verdict}: target < {TARGET_S:g} s) |\n"
        f"| sweep + publish, all repeats | {', '.join(f'{s:.3f}' for s in sorted(sweeps))} s |\n"
        f"| per run | {median / args.runs * 1e6:.0f} us |\n"
        f"| of which the store's sweep (index walk + Lua CAS), median | {store_s:.3f} s |\n"
        f"| of which building + pushing messages, median | {publish_s:.3f} s |\n"
        f"| publishing one message per round trip (for comparison) | "
        f"{per_msg_single_us:.0f} us/message, i.e. {per_msg_single_us * args.runs / 1e6:.1f} s "
        f"for {args.runs:,} |\n\n"
        "Every repeat checks that the broker list holds exactly one message per run and\n"
        "that no record was reported bad. The numbers are from a noisy shared 2-core box.\n"
    )
    if not args.no_write:
        write_results(section)
        print(f"wrote the Recovery section of {RESULTS}")


if __name__ == "__main__":
    main()
