"""Recovery benchmark: what a sweep costs when it has work, and when it has none.

Starts a private redis-server and measures ``Recovery.sweep()`` (store sweep + publishing
through the batch publisher, exactly what every worker runs every ``sweep_interval_s``):

- **healthy**: N running runs with live leases and ~64 KB structured requests, nothing to do.
  Sweep time, the worst round trip of a PING sent every millisecond from another process
  during the sweeps, and the longest single command Redis itself executed (its latency
  monitor): a sweep must not hold Redis for more than a few milliseconds at a time.
- **interrupted**: N interrupted runs (a warm shutdown's state) found, moved back to
  `queued` and re-published; checks that the broker list holds exactly N messages.
- **empty sweep vs active runs**: the cost of a sweep that finds nothing, for growing numbers
  of healthy running runs (it should not grow).
- **renewal**: one ``renew_many`` round trip for 1,000 leases (the recovery index is pushed
  forward by every renewal, so this is its price).

    .venv/bin/python bench/recovery_bench.py [--repeats 3] [--no-write] [--json-out F]
        [--baseline F]     # a --json-out file from an earlier commit: adds "before" columns
        [--smoke]          # tiny sizes, no write: what CI runs so the script cannot rot

Only ``Recovery``, ``RedisStore`` and ``BatchPublisher`` are used, so the same file runs
against older commits (``PYTHONPATH=<old checkout>``) to produce the baseline.
Writes its tables under ``## Recovery`` in bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis
from results import Machine, Target, write_section

from executus_worker.checkpoint import codec, redis_store, scripts
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence
from executus_worker.core import models
from executus_worker.core.models import RunRequest
from executus_worker.embedded import EmbeddedRedis
from executus_worker.publish import BatchPublisher
from executus_worker.worker.recovery import Recovery, ScanLock

QUEUE = "executus"
PREFIX = "bench"
LONG_LEASE_S = 3_600.0  # healthy runs: their leases outlive the benchmark


# --------------------------------------------------------------------------- the pinger


def _ping_loop(url: str, conn: multiprocessing.connection.Connection) -> None:
    """In its own process (no GIL shared with the sweeper): PING every ~1 ms; on "stop",
    send back the RTTs measured since the last "start"."""
    client = redis.Redis.from_url(url)
    client.ping()  # connect now, so no sample includes the connection setup
    samples: list[float] = []
    running = False
    while True:
        if conn.poll(0.001 if running else None):
            command = conn.recv()
            if command == "start":
                samples, running = [], True
                conn.send("ok")
            elif command == "stop":
                running = False
                conn.send(samples)
            else:
                return
        if running:
            t0 = time.perf_counter()
            client.ping()
            samples.append(time.perf_counter() - t0)


class Pinger:
    def __init__(self, url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_ping_loop, args=(url, child), daemon=True)
        self._proc.start()

    def start(self) -> None:
        self._conn.send("start")
        self._conn.recv()

    def stop(self) -> list[float]:
        self._conn.send("stop")
        samples: list[float] = self._conn.recv()
        return samples

    def close(self) -> None:
        self._conn.send("quit")
        self._proc.join(5)


def redis_cpu_s(client: redis.Redis) -> float:
    """CPU seconds the redis-server has used: the work, whatever the load on the box."""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def redis_worst_command_ms(client: redis.Redis) -> float:
    """The longest single command (a script counts as one) since the last reset, per Redis's
    latency monitor (1 ms resolution: 0 means under 1 ms)."""
    worst = 0.0
    for event in client.execute_command("LATENCY", "LATEST"):
        name = event[0].decode() if isinstance(event[0], bytes) else str(event[0])
        if name in {"command", "fast-command"}:
            worst = max(worst, float(event[3]))
    return worst


# --------------------------------------------------------------------------- datasets


def big_request(kb: int) -> RunRequest:
    """A structured request of about ``kb`` KB: documents, as an agent's input often is."""
    doc = {"title": "quarterly report", "text": "lorem ipsum dolor sit amet " * 8, "tags": ["a"]}
    per_doc = len(json.dumps(doc)) + 12
    documents = [{"id": i, **doc} for i in range(max(1, kb * 1024 // per_doc))]
    return RunRequest(agent="demo.counter", input={"steps": 3, "documents": documents})


SMALL = RunRequest(agent="demo.counter", input={"steps": 5, "step_s": 0.1})


def build(store: RedisStore, ids: Sequence[str], request: RunRequest, *, interrupt: bool,
          lease_ttl_s: float) -> None:  # fmt: skip
    """Register and claim every run (and interrupt it) with the store's own scripts, exactly the
    calls ``register`` / ``claim`` / ``interrupt`` make, but pipelined 1,000 runs at a time: a
    100,000-run dataset in seconds instead of minutes. Each run is checked: claimed, and
    interrupted when asked. (Uses RedisStore internals, which every version benched has.)"""
    client = store._r
    for name in ("register", "claim", "interrupt"):
        redis_store._SHA[name] = client.script_load(scripts.WITH_LIB[name])
    now = time.time()
    fields = codec.record_fields(request, run_id="@", queue=QUEUE, now=now)
    # The REGISTER script's arguments: since `register_enqueued` (one-round-trip enqueue) the
    # fields come counted and followed by "-" (no event); before it, the fields alone.
    counted = hasattr(RedisStore, "register_enqueued")
    # CLAIM's later arguments (refund grace, checkpoint format); older scripts ignore them.
    grace, version = 2 * lease_ttl_s, getattr(models, "CHECKPOINT_FORMAT_VERSION", 1)
    for start in range(0, len(ids), 1_000):
        pipe = client.pipeline(transaction=False)
        for run_id in ids[start : start + 1_000]:
            keys = store.keys.run(run_id).all()
            flat = [x for k, v in {**fields, "run_id": run_id}.items() for x in (k, v)]
            register = [run_id, now, len(flat), *flat, "-"] if counted else [run_id, now, *flat]
            pipe.evalsha(redis_store._SHA["register"], len(keys), *keys, *register)
            fence = Fence.new().token
            claim = [run_id, now, "bench:1", round(lease_ttl_s * 1000), 5, 86_400, fence,
                     grace, version]  # fmt: skip
            pipe.evalsha(redis_store._SHA["claim"], len(keys), *keys, *claim)
            if interrupt:
                pipe.evalsha(redis_store._SHA["interrupt"], len(keys), *keys, run_id, now, fence)
        replies = pipe.execute()
        step = 3 if interrupt else 2
        for k in range(0, len(replies), step):
            if int(replies[k][0]) != 1 or codec.text(replies[k + 1][0]) != "claimed":
                raise SystemExit(f"dataset build failed: {replies[k : k + step]}")


def add_running(store: RedisStore, n: int, request: RunRequest, start: int = 0) -> None:
    ids = [f"live-{i:06d}" for i in range(start, start + n)]
    build(store, ids, request, interrupt=False, lease_ttl_s=LONG_LEASE_S)


def add_interrupted(store: RedisStore, n: int) -> None:
    build(store, [f"int-{i:06d}" for i in range(n)], SMALL, interrupt=True, lease_ttl_s=60)


def recovery(client: redis.Redis, store: RedisStore) -> Recovery:
    return Recovery(
        store,
        BatchPublisher(client),
        queued_timeout_s=900,
        lock=ScanLock(client, f"{PREFIX}:recover:lock"),
    )


# --------------------------------------------------------------------------- measurements


def timed_sweeps(
    client: redis.Redis, pinger: Pinger, sweep: Callable[[], Any], repeats: int
) -> dict[str, Any]:
    """``repeats`` sweeps, each with its own PING and latency-monitor window."""
    rounds = []
    for _ in range(repeats):
        client.execute_command("LATENCY", "RESET")
        pinger.start()
        redis_cpu0 = redis_cpu_s(client)
        cpu0, t0 = time.process_time(), time.perf_counter()
        report = sweep()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        redis_cpu = redis_cpu_s(client) - redis_cpu0
        pings = pinger.stop()
        rounds.append(
            {
                "sweep_s": elapsed,
                "client_cpu_s": cpu,
                "redis_cpu_s": redis_cpu,
                "store_s": report.store_s,
                "publish_s": report.publish_s,
                "scanned": report.scanned,
                "requeued": report.requeued,
                "ping_max_ms": max(pings, default=0.0) * 1e3,
                "pings": len(pings),
                "redis_worst_ms": redis_worst_command_ms(client),
            }
        )
    return summarise(rounds)


def summarise(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"repeats": len(rounds)}
    for key in rounds[0]:
        values = sorted(r[key] for r in rounds)
        out[key] = {"median": statistics.median(values), "min": values[0], "max": values[-1]}
    return out


def bench_control(client: redis.Redis, pinger: Pinger, window_s: float, repeats: int) -> dict:
    """The same PING and latency-monitor windows with no sweep running: the noise floor of
    the box (a shared VM preempts redis-server too, and Redis counts that as command time)."""
    return timed_sweeps(client, pinger, lambda: _Idle(window_s), repeats)


class _Idle:
    """Stands in for a SweepReport: waits ``window_s`` doing nothing."""

    store_s = publish_s = 0.0
    scanned = requeued = 0

    def __init__(self, window_s: float) -> None:
        time.sleep(window_s)


def bench_healthy(client: redis.Redis, pinger: Pinger, n: int, kb: int, repeats: int) -> dict:
    client.flushall()
    store = RedisStore(client, key_prefix=PREFIX)
    add_running(store, n, big_request(kb))
    used_mb = int(client.info("memory")["used_memory"]) / 2**20
    result = timed_sweeps(client, pinger, recovery(client, store).sweep, repeats)
    if result["requeued"]["max"] != 0:
        raise SystemExit("a sweep over healthy runs requeued something")
    return {"runs": n, "request_kb": kb, "redis_mb": round(used_mb), **result}


def bench_interrupted(client: redis.Redis, pinger: Pinger, n: int, repeats: int) -> dict:
    rounds = []
    for _ in range(repeats):
        client.flushall()
        store = RedisStore(client, key_prefix=PREFIX)
        add_interrupted(store, n)
        one = timed_sweeps(client, pinger, recovery(client, store).sweep, 1)
        queued = client.llen(QUEUE)
        if one["requeued"]["median"] != n or queued != n:
            raise SystemExit(f"requeued {one['requeued']}, queue holds {queued}, want {n}")
        rounds.append({k: v["median"] for k, v in one.items() if isinstance(v, dict)})
    return {"runs": n, **summarise(rounds)}


def bench_empty(client: redis.Redis, pinger: Pinger, sizes: Sequence[int], repeats: int) -> dict:
    client.flushall()
    store = RedisStore(client, key_prefix=PREFIX)
    out: dict[str, Any] = {}
    have = 0
    for n in sorted(sizes):
        add_running(store, n - have, SMALL, start=have)
        have = n
        result = timed_sweeps(client, pinger, recovery(client, store).sweep, repeats)
        out[str(n)] = result
    return out


def bench_renew(client: redis.Redis, n: int, repeats: int) -> dict:
    client.flushall()
    store = RedisStore(client, key_prefix=PREFIX)
    now = time.time()
    leases: list[tuple[str, Fence]] = []
    for i in range(n):
        run_id = f"renew-{i:05d}"
        store.register(SMALL, run_id=run_id, queue=QUEUE, now=now)
        claim = store.claim(run_id, owner="bench:1", lease_ttl_s=30, max_attempts=5, now=now)
        assert claim.fence is not None
        leases.append((run_id, claim.fence))
    store.renew_many(leases, lease_ttl_s=30)  # loads the script

    def renew_only() -> list[Any]:
        """The RENEW scripts alone, as renew_many pipelines them (no recovery-index push)."""
        pipe = client.pipeline(transaction=False)
        for run_id, fence in leases:
            keys = (store.keys.rec(run_id), store.keys.lease(run_id))
            pipe.evalsha(redis_store._SHA["renew"], 2, *keys, fence.token, 30_000)
        return list(pipe.execute())

    # Alternating, so both see the same load: the store's renew_many, and the scripts alone.
    rounds: dict[str, list[dict[str, float]]] = {"renew_many": [], "renew_only": []}
    for _ in range(max(repeats, 5) * 4):
        for name, call in (
            ("renew_many", lambda: store.renew_many(leases, lease_ttl_s=30)),
            ("renew_only", renew_only),
        ):
            redis_cpu0, cpu0 = redis_cpu_s(client), time.process_time()
            t0 = time.perf_counter()
            replies = call()
            elapsed = time.perf_counter() - t0
            rounds[name].append(
                {
                    "ms": elapsed * 1e3,
                    "client_cpu_ms": (time.process_time() - cpu0) * 1e3,
                    "redis_cpu_ms": (redis_cpu_s(client) - redis_cpu0) * 1e3,
                }
            )
            assert all(codec.text(r) == "ok" for r in replies), replies[:3]
    return {"leases": n, **summarise(rounds["renew_many"]), "only": summarise(rounds["renew_only"])}


# --------------------------------------------------------------------------- report


def fmt(stat: dict[str, float] | None, unit: str = "s", scale: float = 1.0, nd: int = 3) -> str:
    if stat is None:
        return "n/a"
    m, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
    return f"{m:,.{nd}f}{' ' if unit else ''}{unit} ({lo:,.{nd}f}-{hi:,.{nd}f})"


def render(res: dict[str, Any], base: dict[str, Any] | None, commit: str) -> str:
    def before(*path: str) -> Any:
        node: Any = base
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return node

    head = (
        "| measure | before | after |\n|---|---|---|\n"
        if base
        else "| measure | result |\n|---|---|\n"
    )

    def row(label: str, *path: str, unit: str = "s", scale: float = 1.0, nd: int = 3) -> str:
        node: Any = res
        for p in path:
            node = node[p]
        cells = [fmt(node, unit, scale, nd)]
        if base:
            cells.insert(0, fmt(before(*path), unit, scale, nd))
        return f"| {label} | " + " | ".join(cells) + " |\n"

    h = res["healthy"]
    lines = [
        f"`bench/recovery_bench.py` (redis-py {res.get('redis_py', '?')}).\n"
        "Each cell: median (min-max) over the repeats; every sweep is a full "
        "`Recovery.sweep()` (store sweep + publishing) against a private redis-server on "
        "loopback. *PING worst*: the slowest round trip of a PING sent every millisecond "
        "by another process during the sweep. *Redis worst command*: the longest single "
        "command Redis executed during the sweep (its latency monitor, 1 ms resolution; "
        "0 = under 1 ms). On a loaded box wall-clock times are inflated and vary; the CPU "
        "rows (the sweeper's process time, redis-server's `used_cpu_user + used_cpu_sys`) are "
        "the stable measure of the work, and *PING worst* / *Redis worst command* include "
        "time in which redis-server was not scheduled at all (compare the noise floor).\n",
    ]
    if base:

        def load(r: dict[str, Any]) -> str:
            if "load_before" not in r:
                return "?"
            return f"{r['load_before'][0]:.1f} at the start, {r['load_after'][0]:.1f} at the end"

        lines.append(
            f"\n*before* = commit {base.get('commit', '?')} (1-minute load average "
            f"{load(base)}), *after* = {commit}.\n"
        )
    lines.append(
        f"\n### Sweep over {h['runs']:,} healthy running runs ({h['request_kb']} KB requests, "
        f"Redis {h['redis_mb']} MB), nothing to do\n\n"
    )
    lines.append(head)
    lines.append(row("sweep time", "healthy", "sweep_s"))
    lines.append(row("sweeper CPU", "healthy", "client_cpu_s"))
    lines.append(row("redis-server CPU", "healthy", "redis_cpu_s"))
    lines.append(row("runs the store looked at", "healthy", "scanned", unit="", nd=0))
    lines.append(row("PING worst", "healthy", "ping_max_ms", unit="ms", nd=1))
    lines.append(row("Redis worst command", "healthy", "redis_worst_ms", unit="ms", nd=0))
    if "control" in res:
        lines.append("\n### Noise floor: the same 2 s windows with no sweep running\n\n")
        lines.append(head)
        lines.append(row("PING worst", "control", "ping_max_ms", unit="ms", nd=1))
        lines.append(row("Redis worst command", "control", "redis_worst_ms", unit="ms", nd=0))
    for n, r in res["interrupted"].items():
        lines.append(f"\n### {int(n):,} interrupted runs found and re-published\n\n")
        lines.append(head)
        lines.append(row("sweep + publish", "interrupted", n, "sweep_s"))
        lines.append(row("per run", "interrupted", n, "sweep_s", unit="us",
                         scale=1e6 / int(n), nd=0))  # fmt: skip
        lines.append(row("sweeper CPU", "interrupted", n, "client_cpu_s"))
        lines.append(row("redis-server CPU", "interrupted", n, "redis_cpu_s"))
        lines.append(row("of which the store's sweep", "interrupted", n, "store_s"))
        lines.append(row("of which building + pushing messages", "interrupted", n, "publish_s"))
        lines.append(row("PING worst", "interrupted", n, "ping_max_ms", unit="ms", nd=1))
        lines.append(row("Redis worst command", "interrupted", n, "redis_worst_ms",
                         unit="ms", nd=0))  # fmt: skip
        del r
    lines.append("\n### A sweep that finds nothing, by number of healthy running runs\n\n")
    lines.append(head.replace("measure", "healthy runs"))
    for n in res["empty"]:
        lines.append(row(f"{int(n):,}", "empty", n, "sweep_s", unit="ms", scale=1e3, nd=2))
    lines.append("\n*Runs the store looked at* in those sweeps: ")
    lines.append(", ".join(f"{int(n):,} -> {res['empty'][n]['scanned']['median']:,.0f}"
                           for n in res["empty"]))  # fmt: skip
    lines.append(".\n")
    lines.append("\n### Renewal\n\n")
    lines.append(head)
    leases = f"{res['renew']['leases']:,} leases"
    lines.append(row(f"`renew_many` of {leases}, one round trip", "renew", "ms", unit="ms", nd=2))
    if "client_cpu_ms" in res["renew"]:
        lines.append(row("its client CPU", "renew", "client_cpu_ms", unit="ms", nd=2))
    lines.append(row("its redis-server CPU", "renew", "redis_cpu_ms", unit="ms", nd=2))
    if "only" in res["renew"]:
        lines.append(row("the RENEW scripts alone: time", "renew", "only", "ms", unit="ms", nd=2))
        lines.append(row("... client CPU", "renew", "only", "client_cpu_ms", unit="ms", nd=2))
        lines.append(row("... redis-server CPU", "renew", "only", "redis_cpu_ms", unit="ms", nd=2))
    if res.get("notes"):
        lines.append("\n" + res["notes"].strip() + "\n")
    return "".join(lines)


def targets(res: dict[str, Any]) -> list[Target]:
    out = []
    sizes = sorted(int(n) for n in res["interrupted"])
    if sizes:
        n = sizes[-1]
        stat = res["interrupted"][str(n)]["sweep_s"]
        value = f"{n:,} runs: {fmt(stat)}"
        # The figure is 100,000 runs; a smaller run says what it measured, no verdict.
        met = stat["median"] < 5.0 if n >= 100_000 else None
        out.append(Target("recovery.interrupted", value, met))
    empty = res["empty"]
    if empty:
        ordered = sorted(empty, key=int)
        first = empty[ordered[0]]["sweep_s"]["median"]
        last = empty[ordered[-1]]["sweep_s"]["median"]
        looked = max(empty[n]["scanned"]["max"] for n in ordered)
        value = (
            f"{first * 1e3:.2f} ms at {int(ordered[0]):,} healthy runs, {last * 1e3:.2f} ms at "
            f"{int(ordered[-1]):,}; runs looked at: {looked:,.0f}"
        )
        # Independent: no healthy run is looked at, and the time does not grow beyond noise.
        out.append(Target("recovery.empty", value, looked == 0 and last <= 3 * first + 0.002))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--healthy", type=int, default=10_000)
    parser.add_argument("--healthy-kb", type=int, default=64)
    parser.add_argument("--interrupted", default="10000,100000")
    parser.add_argument("--empty", default="0,1000,10000,100000")
    parser.add_argument("--renew", type=int, default=1_000)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--notes", type=Path, help="a Markdown file appended to the section")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-json", type=Path, help="render a --json-out file, measure nothing")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat, no write")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.healthy, args.healthy_kb = 1, 20, 4
        args.interrupted, args.empty, args.renew, args.no_write = "30", "0,10", 10, True

    if args.from_json:
        res: dict[str, Any] = json.loads(args.from_json.read_text())
    else:
        res = measure(args)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1))
    if args.notes:
        res["notes"] = args.notes.read_text()
    base = json.loads(args.baseline.read_text()) if args.baseline else None
    # A --from-json file from before the shared writer has no machine_info: describe this box.
    info = res.get("machine_info")
    machine = Machine(**info) if info else Machine.capture().finish()
    section = render(res, base, machine.commit)
    print(section)
    if not args.no_write:
        write_section("Recovery", section, machine, targets(res))
        print("wrote the Recovery section of bench/RESULTS.md")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    machine = Machine.capture()
    res: dict[str, Any] = {
        "commit": machine.commit,
        "redis_py": redis.__version__,
        "load_before": [machine.load_start],
    }
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("latency-monitor-threshold", 1)
        pinger = Pinger(server.url)
        try:
            res["control"] = bench_control(client, pinger, 2.0 if not args.smoke else 0.1, 3)
            print("control:", json.dumps(res["control"]), flush=True)
            res["healthy"] = bench_healthy(
                client, pinger, args.healthy, args.healthy_kb, args.repeats
            )
            print("healthy:", json.dumps(res["healthy"]), flush=True)
            res["interrupted"] = {}
            for n in (int(x) for x in args.interrupted.split(",")):
                res["interrupted"][str(n)] = bench_interrupted(client, pinger, n, args.repeats)
                print(f"interrupted {n}:", json.dumps(res["interrupted"][str(n)]), flush=True)
            sizes = [int(x) for x in args.empty.split(",")]
            res["empty"] = bench_empty(client, pinger, sizes, args.repeats)
            print("empty:", json.dumps(res["empty"]), flush=True)
            res["renew"] = bench_renew(client, args.renew, args.repeats)
            print("renew:", json.dumps(res["renew"]), flush=True)
        finally:
            version = client.info("server")["redis_version"]
            pinger.close()
            client.close()
    machine.finish(redis_version=version)
    res["load_after"] = [machine.load_end]
    res["machine_info"] = asdict(machine)
    return res


if __name__ == "__main__":
    main()
