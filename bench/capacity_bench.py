"""Capacity: how many concurrently running runs one Redis carries before renewals suffer.

N running runs (N = 1,000, 5,000, 10,000, ... until a limit is reached) are simulated by a few
client processes through the worker's own code paths: ``RedisStore`` built as
``worker/runtime.py`` builds it, ``RunHandle.save`` (one fenced save of a new ~500-byte
assistant message per step, every ``--step-s`` seconds per run) and ``RedisStore.renew_many``
(every ``lease_ttl_s / 3``, one pipelined round trip per simulated worker process holding
``--runs-per-worker`` runs: 1 on the prefork pool, whose children each hold one run and renew
it on their own). Every run's step and every worker's renewal keeps its own phase, so the load
is spread evenly; the schedule is open-loop (a late operation does not delay the next one's
due time), so a load generator that falls behind shows as schedule lag instead of quietly
sending less.

Per N: renewal round trip p50/p99 (the load generators' own, and a probe's: one lease renewed
every 20 ms by the otherwise idle parent process, i.e. without the generators' CPU
contention), save p50/p99, schedule lag, redis-server CPU (INFO ``used_cpu_*``), Redis
commands/s (INFO, the calls inside scripts included), the generators' CPU, and the whole box's
CPU (/proc/stat). Stepping stops when the renewal p99 exceeds the threshold (default 10% of the
lease margin, see ``threshold_s``), Redis saturates, or the generators cannot keep up (then the
box, not Redis, is the limit, and the sizing rule below comes from Redis's CPU per run).

A calibration first measures redis-server CPU per save and per renewal with one client; the
sizing rule divides a CPU budget by the cost of one running run per second.

    python bench/capacity_bench.py [--redis-url URL] [--levels 1000,5000,10000,20000,50000]
        [--processes 4] [--runs-per-worker 1] [--step-s 5] [--window-s 20] [--no-write]
        [--cluster [--masters 3]]

``--cluster``: the same load on a private Redis Cluster (``--masters`` masters on loopback, AOF
everysec, run state in 64 index partitions as a worker on a cluster keeps it); or give a
``redis+cluster://`` URL. The server counters are summed over the masters and the busiest
master is reported too: a cluster's capacity is reached when its busiest master's core is.
Writes the ``## Capacity on Redis Cluster`` section.

Without ``--redis-url`` it starts a private redis-server with the production persistence
settings (ops/redis.conf: AOF, ``appendfsync everysec``). The target is only a URL, reached
through ``store_for`` and read through ``server_sample``: the load generator never names a
key, so the same load runs against anything RedisStore can talk to. Writes the
``## Capacity`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import multiprocessing.connection
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from results import Machine, Target, pct, write_section

from executus_worker.checkpoint.handle import RunHandle
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence, RenewStatus
from executus_worker.core.models import Checkpoint, Message, RunRequest
from executus_worker.embedded import EmbeddedRedis
from executus_worker.embedded_cluster import LocalCluster
from executus_worker.redis_connect import StateClient, is_cluster
from executus_worker.settings import Settings
from executus_worker.worker.runtime import redis_client, state_client

MESSAGE = Message(role="assistant", content="x" * 480)  # ~500 bytes of JSON, one per step
REQUEST = RunRequest(agent="bench.capacity", input={"task": "capacity"})
# The leases of a run being built must outlive the build of every other run of its level;
# the first renewal sets the real TTL.
BUILD_LEASE_S = 3_600.0
PROBE_EVERY_S = 0.02
SAMPLE_EVERY_S = 1.0
CPU_BUDGET = 0.5  # the share of one Redis core the sizing rule plans for (see the section)


# --------------------------------------------------------------------------- the target


def store_for(url: str, prefix: str, timeout_s: float) -> RedisStore:
    """A RedisStore on ``url``, built as the worker builds it (``worker/runtime.py``; on a
    cluster with the default index partitions). The one place that knows how to reach the
    target."""
    return RedisStore(state_client(url, timeout_s=timeout_s), key_prefix=prefix)


class Servers:
    """A plain client per master of the target (one for a single Redis): what the server
    counters are read from and what cleanup walks."""

    def __init__(self, url: str) -> None:
        if is_cluster(url):
            cluster: StateClient = state_client(url)
            assert not isinstance(cluster, redis.Redis)
            self.clients = [
                redis.Redis(host=node.host, port=node.port, socket_timeout=10)
                for node in cluster.get_primaries()
            ]
            cluster.close()
        else:
            self.clients = [redis_client(url)]

    def close(self) -> None:
        for client in self.clients:
            client.close()


def server_sample(servers: Servers) -> dict[str, float]:
    """Cumulative counters of the target: CPU seconds, commands, EVALSHA calls and their
    server time, memory, summed over the masters; ``cpu_s@i``: master i's CPU seconds."""
    out = {"cpu_s": 0.0, "commands": 0.0, "evalsha_calls": 0.0, "evalsha_usec": 0.0}
    out["memory"] = 0.0
    for index, client in enumerate(servers.clients):
        info = client.info("all")
        evalsha = info.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
        cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        out[f"cpu_s@{index}"] = cpu
        out["cpu_s"] += cpu
        out["commands"] += float(info["total_commands_processed"])
        out["evalsha_calls"] += float(evalsha["calls"])
        out["evalsha_usec"] += float(evalsha["usec"])
        out["memory"] += float(info["used_memory"])
    out["t"] = time.monotonic()
    return out


def busiest(first: dict[str, float], last: dict[str, float]) -> float:
    """CPU seconds of the master that worked most between two samples."""
    return max(last[k] - first[k] for k in first if k.startswith("cpu_s@"))


def cleanup(servers: Servers, prefix: str) -> None:
    """Drop one level's keys (every key RedisStore writes starts with its prefix). One key
    per UNLINK: on a cluster master, keys of different slots cannot share a command."""
    for client in servers.clients:
        pipe = client.pipeline(transaction=False)
        for n, key in enumerate(client.scan_iter(match=f"{prefix}:*", count=10_000), 1):
            pipe.unlink(key)
            if n % 5_000 == 0:
                pipe.execute()
        pipe.execute()


# --------------------------------------------------------------------------- load processes


@dataclass(frozen=True)
class Plan:
    url: str
    prefix: str
    first: int  # run ids first .. first + runs - 1
    runs: int
    per_worker: int
    step_s: float
    lease_ttl_s: float
    renew_timeout_s: float
    warmup_s: float
    window_s: float
    seed: int


@dataclass
class Report:
    build_s: float = 0.0
    renew: list[float] = field(default_factory=list)  # round trip, s
    save: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # start - due, s
    done: int = 0  # operations due in the window and executed
    due: int = 0  # operations due in the window
    bad_renewals: int = 0
    errors: int = 0
    cpu_s: float = 0.0  # this process's CPU from the window's start to its last operation
    span_s: float = 0.0  # the wall time of the same


def _build(plan: Plan, store: RedisStore) -> list[tuple[RunHandle, Checkpoint]]:
    runs = []
    owner = f"capacity:{os.getpid()}"
    for i in range(plan.first, plan.first + plan.runs):
        run_id = f"cap-{i:07d}"
        store.register(REQUEST, run_id=run_id, queue="capacity", now=time.time())
        claim = store.claim(
            run_id, owner=owner, lease_ttl_s=BUILD_LEASE_S, max_attempts=5, now=time.time()
        )
        if claim.fence is None:
            raise RuntimeError(f"could not claim {run_id}: {claim.status}")
        handle = RunHandle(store, run_id, claim.fence, first_claim=True)
        handle.load()  # the first claim: nothing stored, no round trip
        runs.append((handle, Checkpoint(run_id=run_id)))
    return runs


def load_process(plan: Plan, conn: multiprocessing.connection.Connection) -> None:
    try:
        conn.send(("report", _load(plan, conn)))
    except Exception as exc:  # the parent reports it; a dead child must not hang the level
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _load(plan: Plan, conn: multiprocessing.connection.Connection) -> Report:
    report = Report()
    saves_store = store_for(plan.url, plan.prefix, 10.0)
    renew_store = store_for(plan.url, plan.prefix, plan.renew_timeout_s)
    started = time.perf_counter()
    runs = _build(plan, saves_store)
    workers: list[list[tuple[str, Fence]]] = [
        [(h.run_id, h.fence) for h, _ in runs[i : i + plan.per_worker]]
        for i in range(0, len(runs), plan.per_worker)
    ]
    report.build_s = time.perf_counter() - started
    conn.send(("built", report.build_s))
    start_at: float = conn.recv()

    interval = plan.lease_ttl_s / 3  # Heartbeats' default interval
    rng = random.Random(plan.seed)
    # (due, kind, index): kind 0 = a worker's renewal, 1 = a run's step (its save).
    heap: list[tuple[float, int, int]] = [
        (start_at + rng.uniform(0, interval), 0, w) for w in range(len(workers))
    ]
    heap += [(start_at + rng.uniform(0, plan.step_s), 1, r) for r in range(len(runs))]
    heapq.heapify(heap)
    window_start = start_at + plan.warmup_s
    window_end = window_start + plan.window_s
    give_up = window_end + max(30.0, plan.window_s)  # a generator hopelessly behind stops
    cpu_started: float | None = None
    wall_started = 0.0

    while heap and heap[0][0] < window_end:
        due, kind, index = heap[0]
        now = time.time()
        if now > give_up:
            break
        if due > now:
            time.sleep(min(due - now, 0.05))
            continue
        heapq.heappop(heap)
        if cpu_started is None and due >= window_start:
            cpu_started, wall_started = time.process_time(), time.perf_counter()
        t0 = time.perf_counter()
        try:
            if kind == 0:
                replies = renew_store.renew_many(workers[index], lease_ttl_s=plan.lease_ttl_s)
                report.bad_renewals += sum(r is not RenewStatus.OK for r in replies)
            else:
                handle, checkpoint = runs[index]
                checkpoint.messages.append(MESSAGE)
                checkpoint.iteration += 1
                handle.save(checkpoint)
        except Exception:
            report.errors += 1
        elapsed = time.perf_counter() - t0
        if due >= window_start:
            report.done += 1
            report.lag.append(now - due)
            (report.renew if kind == 0 else report.save).append(elapsed)
        heapq.heappush(heap, (due + (interval if kind == 0 else plan.step_s), kind, index))
    if cpu_started is not None:
        report.cpu_s = time.process_time() - cpu_started
        report.span_s = time.perf_counter() - wall_started
    # What was due in the window, executed or not (a generator behind schedule misses some).
    per_window = len(workers) * plan.window_s / interval + len(runs) * plan.window_s / plan.step_s
    report.due = round(per_window)
    return report


# --------------------------------------------------------------------------- one level


@dataclass
class Level:
    runs: int
    build_s: float
    renew: list[float]
    save: list[float]
    lag: list[float]
    probe: list[float]
    done: int
    due: int
    bad_renewals: int
    errors: int
    client_cpu: float  # cores used by the load generators during the window
    redis_cpu: float  # share of one core used by redis-server (summed over a cluster's masters)
    redis_cpu_max: float  # the busiest master's share of its core (= redis_cpu on one Redis)
    commands_per_s: float
    evalsha_us: float  # server time per script call
    box_cpu: float  # share of all cores busy (whole machine)
    memory_per_run: float
    verdict: str = ""


def _box_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _probe_run(store: RedisStore, lease_ttl_s: float) -> list[tuple[str, Fence]]:
    run_id = f"probe-{os.getpid()}"
    store.register(REQUEST, run_id=run_id, queue="capacity", now=time.time())
    claim = store.claim(
        run_id, owner="capacity:probe", lease_ttl_s=lease_ttl_s, max_attempts=5, now=time.time()
    )
    assert claim.fence is not None
    return [(run_id, claim.fence)]


def run_level(args: argparse.Namespace, url: str, n: int, settings: Settings) -> Level:
    prefix = f"capbench{os.getpid()}n{n}"
    ctx = multiprocessing.get_context("spawn")
    procs = min(args.processes, max(1, n // args.runs_per_worker))
    share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    children = []
    first = 0
    for i, runs in enumerate(share):
        plan = Plan(
            url=url, prefix=prefix, first=first, runs=runs, per_worker=args.runs_per_worker,
            step_s=args.step_s, lease_ttl_s=settings.lease_ttl_s,
            renew_timeout_s=settings.effective_renew_timeout_s, warmup_s=args.warmup_s,
            window_s=args.window_s, seed=n * 1_000 + i,
        )  # fmt: skip
        first += runs
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=load_process, args=(plan, child_end), daemon=True)
        proc.start()
        children.append((proc, parent_end))
    client = Servers(url)
    probe_store = store_for(url, prefix, settings.effective_renew_timeout_s)
    probe_leases = _probe_run(probe_store, settings.lease_ttl_s)
    try:
        builds = [_receive(proc, end, "built", 900.0) for proc, end in children]
        start_at = time.time() + 1.0
        for _, end in children:
            end.send(start_at)
        window_start = start_at + args.warmup_s
        window_end = window_start + args.window_s
        while time.time() < window_start:
            time.sleep(0.01)
        first_sample, box0 = server_sample(client), _box_busy()
        probe: list[float] = []
        while time.time() < window_end:
            t0 = time.perf_counter()
            probe_store.renew_many(probe_leases, lease_ttl_s=settings.lease_ttl_s)
            probe.append(time.perf_counter() - t0)
            time.sleep(max(0.0, PROBE_EVERY_S - (time.perf_counter() - t0)))
        last_sample, box1 = server_sample(client), _box_busy()
        reports: list[Report] = [
            _receive(proc, end, "report", args.window_s + 120.0) for proc, end in children
        ]
    finally:
        for proc, end in children:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()  # our own child, by its handle
            end.close()
        cleanup(client, prefix)
        client.close()
    span = last_sample["t"] - first_sample["t"]
    calls = last_sample["evalsha_calls"] - first_sample["evalsha_calls"]
    busy = box1[0] - box0[0]
    total = box1[1] - box0[1]
    return Level(
        runs=n,
        build_s=max(builds),
        renew=[x for r in reports for x in r.renew],
        save=[x for r in reports for x in r.save],
        lag=[x for r in reports for x in r.lag],
        probe=probe,
        done=sum(r.done for r in reports),
        due=sum(r.due for r in reports),
        bad_renewals=sum(r.bad_renewals for r in reports),
        errors=sum(r.errors for r in reports),
        # Cores in use: each generator's CPU over its own span (a generator behind schedule
        # works past the window's end).
        client_cpu=sum(r.cpu_s / r.span_s for r in reports if r.span_s),
        redis_cpu=(last_sample["cpu_s"] - first_sample["cpu_s"]) / span,
        redis_cpu_max=busiest(first_sample, last_sample) / span,
        commands_per_s=(last_sample["commands"] - first_sample["commands"]) / span,
        evalsha_us=(last_sample["evalsha_usec"] - first_sample["evalsha_usec"]) / max(1, calls),
        box_cpu=busy / total if total else 0.0,
        memory_per_run=last_sample["memory"] / n,
    )


def _receive(
    proc: multiprocessing.process.BaseProcess,
    end: multiprocessing.connection.Connection,
    what: str,
    timeout_s: float,
) -> Any:
    deadline = time.monotonic() + timeout_s
    while not end.poll(0.5):
        if not proc.is_alive():
            raise RuntimeError(f"a load process died (exit code {proc.exitcode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what!r} from a load process within {timeout_s}s")
    kind, value = end.recv()
    if kind == "error":
        raise RuntimeError(f"a load process failed: {value}")
    assert kind == what, (kind, what)
    return value


# --------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    save_us: float  # redis-server CPU per save
    renew_us: float  # per renew_many of one lease (RENEW script + ZADD)
    renew_batched_us: float  # per lease, in renew_many of 100 leases
    idle: float  # redis-server CPU with nothing to do (cron, AOF fsync), share of a core


def calibrate(url: str, settings: Settings, n: int, idle_s: float) -> Calibration:
    """redis-server CPU per operation, one client, nothing else running: the cost model."""
    prefix = f"capcal{os.getpid()}"
    store = store_for(url, prefix, 10.0)
    client = Servers(url)
    plan = Plan(url, prefix, 0, 100, 1, 1.0, settings.lease_ttl_s, 2.0, 0.0, 0.0, 0)
    runs = _build(plan, store)
    leases = [(h.run_id, h.fence) for h, _ in runs]

    def cpu() -> float:  # summed over the masters
        return server_sample(client)["cpu_s"]

    try:
        idle0 = cpu()
        time.sleep(idle_s)
        idle = (cpu() - idle0) / idle_s
        c0 = cpu()
        for i in range(n):
            handle, checkpoint = runs[i % len(runs)]
            checkpoint.messages.append(MESSAGE)
            checkpoint.iteration += 1
            handle.save(checkpoint)
        c1 = cpu()
        for i in range(n):
            store.renew_many([leases[i % len(leases)]], lease_ttl_s=settings.lease_ttl_s)
        c2 = cpu()
        batches = max(1, n // 100)
        for _ in range(batches):
            store.renew_many(leases, lease_ttl_s=settings.lease_ttl_s)
        c3 = cpu()
    finally:
        cleanup(client, prefix)
        client.close()
    return Calibration(
        save_us=(c1 - c0) / n * 1e6,
        renew_us=(c2 - c1) / n * 1e6,
        renew_batched_us=(c3 - c2) / (batches * len(leases)) * 1e6,
        idle=idle,
    )


def per_run_cpu(cal: Calibration, step_s: float, lease_ttl_s: float, per_worker: int) -> float:
    """redis-server CPU seconds per second that one running run costs."""
    renew = cal.renew_us if per_worker == 1 else cal.renew_batched_us
    return (cal.save_us / step_s + renew / (lease_ttl_s / 3)) / 1e6


# --------------------------------------------------------------------------- report


def threshold_s(settings: Settings, fraction: float) -> float:
    """Renewal p99 above this threatens the lease: a fraction of the margin, and never more
    than half the renewal socket timeout (a round trip that long fails and is retried)."""
    return min(fraction * settings.effective_lease_margin_s, settings.effective_renew_timeout_s / 2)


def judge(level: Level, limit_s: float) -> str:
    if level.errors or level.bad_renewals:
        return f"errors ({level.errors} failed calls, {level.bad_renewals} lost leases)"
    if level.renew and pct(level.renew, 0.99) > limit_s:
        return "renewal p99 over the threshold"
    if level.redis_cpu_max >= 0.9:
        return "Redis saturated"
    if level.done < 0.95 * level.due or (level.lag and pct(level.lag, 0.99) > 1.0):
        return "generators behind schedule (client-bound)"
    return "ok"


def _ms(samples: Sequence[float], q: float) -> str:
    return f"{pct(samples, q) * 1e3:.2f}" if samples else "--"


def render(
    args: argparse.Namespace,
    settings: Settings,
    cal: Calibration,
    levels: list[Level],
    limit_s: float,
    where: str,
    masters: int = 1,
) -> tuple[str, Target]:
    interval = settings.lease_ttl_s / 3
    mode = f" --cluster --masters {masters}" if masters > 1 else ""
    lines = [
        f"`python bench/capacity_bench.py{mode} --levels {args.levels} "
        f"--processes {args.processes} --runs-per-worker {args.runs_per_worker} "
        f"--step-s {args.step_s:g} --window-s {args.window_s:g}` against {where}.",
        "",
        f"Each running run saves one ~500-byte message every {args.step_s:g} s "
        f"(`RunHandle.save`) and is renewed every {interval:g} s (`renew_many`, lease TTL "
        f"{settings.lease_ttl_s:g} s) by its simulated worker process, which holds "
        f"{args.runs_per_worker} run(s) (1 = the prefork pool: each child renews its own run "
        f"in its own round trip). {args.processes} load-generating processes share the runs; "
        f"{args.window_s:g} s measured after {args.warmup_s:g} s of warm-up. Threshold: "
        f"renewal p99 ≤ {limit_s * 1e3:.0f} ms = the smaller of 10% of the lease margin "
        f"(EXECUTUS_LEASE_MARGIN_S, default TTL/3 = {settings.effective_lease_margin_s:g} s) "
        f"and half the renewal socket timeout (EXECUTUS_RENEW_TIMEOUT_S, default "
        f"{settings.effective_renew_timeout_s:g} s: a slower round trip fails and is retried). "
        "A renewal leaves TTL - interval of certain lease before the margin is reached, so "
        "the lease itself tolerates far slower round trips; the threshold keeps every "
        "renewal clear of the socket timeout with a 2x margin.",
        "",
        "| running runs | renew p50 / p99 ms | probe renew p50 / p99 ms | save p50 / p99 ms "
        "| schedule lag p99 ms | ops done / due | Redis CPU "
        + ("(all masters) | busiest master CPU " if masters > 1 else "")
        + "| Redis commands/s | server us "
        "per script | generators' CPU (cores) | box CPU | Redis memory per run | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if masters > 1 else "")
        + "---:|---:|---:|---:|---:|---|",
    ]
    for lv in levels:
        cpu = f"{lv.redis_cpu:.0%} " + (f"| {lv.redis_cpu_max:.0%} " if masters > 1 else "")
        lines.append(
            f"| {lv.runs:,} | {_ms(lv.renew, 0.5)} / {_ms(lv.renew, 0.99)} "
            f"| {_ms(lv.probe, 0.5)} / {_ms(lv.probe, 0.99)} "
            f"| {_ms(lv.save, 0.5)} / {_ms(lv.save, 0.99)} | {_ms(lv.lag, 0.99)} "
            f"| {lv.done:,} / {lv.due:,} | {cpu}| {lv.commands_per_s:,.0f} "
            f"| {lv.evalsha_us:.1f} | {lv.client_cpu:.2f} | {lv.box_cpu:.0%} "
            f"| {lv.memory_per_run / 1024:.1f} KB | {lv.verdict} |"
        )
    cost = per_run_cpu(cal, args.step_s, settings.lease_ttl_s, args.runs_per_worker)
    ok = [lv for lv in levels if lv.verdict == "ok"]
    best = ok[-1] if ok else None
    stopped = next((lv for lv in levels if lv.verdict != "ok"), None)
    lines += [
        "",
        "*renew*: the `renew_many` round trip as the load generators measured it (their own "
        "CPU contention included); *probe*: one lease renewed every 20 ms by the otherwise idle "
        "parent process (what Redis and the box add, without the generators' backlog); "
        "*schedule lag*: how late the generators started operations (open loop: a lagging "
        "generator is the client side saturating, not Redis); *Redis CPU*: redis-server's "
        "`used_cpu_user + used_cpu_sys` over the window, in share of one core (Redis executes "
        "commands on one thread); *box CPU*: all cores of the machine, /proc/stat.",
        "",
    ]
    if stopped is not None:
        lines.append(f"Stepping stopped at {stopped.runs:,} runs: {stopped.verdict}.")
    else:
        lines.append("Every level stayed within the threshold.")
    probe_cpu = cal.renew_us / PROBE_EVERY_S / 1e6  # the probe's own renewals

    def predicted(lv: Level) -> float:
        return cal.idle + probe_cpu + lv.runs * cost

    # Under load Redis spends more per operation than alone (more clients, a busy box: context
    # switches, cold caches). The rule plans with the worse of the two: the calibration scaled
    # by what the largest level within the threshold measured against its prediction.
    loaded = [lv for lv in ok if lv.runs * cost > 0.05]
    factor = max(1.0, (loaded[-1].redis_cpu / predicted(loaded[-1])) if loaded else 1.0)
    check = ", ".join(
        f"{lv.runs:,}: {lv.redis_cpu:.0%} measured vs {predicted(lv):.0%} predicted"
        for lv in levels
    )
    lines += [
        "",
        "### Cost model and sizing rule",
        "",
        "redis-server CPU per operation, measured alone with one client (a calibration before "
        f"the levels; idle, Redis uses {cal.idle:.1%} of a core):",
        "",
        "| operation | redis-server CPU, us |",
        "|---|---:|",
        f"| one save (`RunHandle.save`: the SAVE script, a ~500-byte message) "
        f"| {cal.save_us:.1f} |",
        f"| one renewal round trip of one lease (RENEW script + the recovery-index ZADD) "
        f"| {cal.renew_us:.1f} |",
        f"| one lease in a `renew_many` of 100 | {cal.renew_batched_us:.1f} |",
        "",
        "One running run costs Redis `save_us / step_s + renew_us / (lease_ttl_s / 3)` CPU "
        f"seconds per second: {cost * 1e6:.1f} us/s at a {args.step_s:g} s step and the "
        f"{settings.lease_ttl_s:g} s lease. Against the levels (Redis CPU, idle and the probe "
        f"included): {check}; the rule below multiplies the calibration by {factor:.2f} (the "
        "largest level within the threshold, measured over predicted; never below 1).",
        "",
        "Redis runs commands on one core, and latency stays flat until that core nears "
        "saturation (every operation here is a few O(1) commands, tens of microseconds); "
        f"planning for {CPU_BUDGET:.0%} of it leaves room for what a busy Redis also serves: "
        "enqueues, claims and finishes, a recovery sweep re-publishing thousands of runs, an "
        "AOF rewrite. **Rule: running runs per Redis ≈ "
        f"{CPU_BUDGET:g} x 10^6 / ({factor:.2f} x (save_us / step_s + renew_us / "
        "(lease_ttl_s / 3)))**, with the costs above:",
        "",
        "| step every | lease TTL | running runs per Redis (prefork, 1 run per process) "
        "| (threads pool, 100 runs per process) |",
        "|---:|---:|---:|---:|",
    ]
    for step in (1.0, 5.0, 30.0):
        for ttl in (settings.lease_ttl_s, 2 * settings.lease_ttl_s):
            one = CPU_BUDGET / (factor * per_run_cpu(cal, step, ttl, 1))
            batched = CPU_BUDGET / (factor * per_run_cpu(cal, step, ttl, 100))
            lines.append(f"| {step:g} s | {ttl:g} s | {one:,.0f} | {batched:,.0f} |")
    lines += [
        "",
        "Memory is the other bound: the per-run figure in the first table grows with the "
        "transcript (a ~500-byte message per step; a run's keys expire after it finishes). "
        "Renewal latency is not the first limit: it stays in milliseconds while Redis has CPU "
        "to spare, and only a saturated Redis (or a saturated client host) pushes it toward "
        "the threshold.",
    ]
    rule = CPU_BUDGET / (factor * cost)
    if masters > 1:
        return _cluster_rule(lines, levels, masters, rule, args, settings)
    if best is not None:
        value = (
            f"{best.runs:,} measured within the threshold (renew p99 "
            f"{_ms(best.renew, 0.99)} ms, Redis CPU {best.redis_cpu:.0%}"
            + (f"; stopped at {stopped.runs:,}: {stopped.verdict}" if stopped else "")
            + f"); rule: ~{rule:,.0f} runs per Redis at {CPU_BUDGET:.0%} CPU "
            f"(step {args.step_s:g} s, lease {settings.lease_ttl_s:g} s, prefork)"
        )
    else:
        value = f"no level within the threshold; rule: ~{rule:,.0f} runs per Redis"
    return "\n".join(lines), Target("capacity.runs", value, None)


def _cluster_rule(
    lines: list[str],
    levels: list[Level],
    masters: int,
    rule: float,
    args: argparse.Namespace,
    settings: Settings,
) -> tuple[str, Target]:
    """How the rule grows with masters: each master has its own core, and the cluster is full
    when its busiest master is; the busiest master's share of the work is measured."""
    loaded = [lv for lv in levels if lv.verdict == "ok" and lv.redis_cpu > 0]
    top = loaded[-1] if loaded else (levels[-1] if levels else None)
    share = top.redis_cpu_max / top.redis_cpu if top and top.redis_cpu else 1.0
    cluster = rule / max(share, 1.0 / masters)
    lines += [
        "",
        "### On a cluster",
        "",
        f"Above, *Redis CPU* is summed over the {masters} masters and the costs are per "
        "operation on whichever master serves it (a run's keys and its partition's indexes "
        "share one slot). Each master executes commands on its own core, so a cluster is full "
        "when its busiest master is: at "
        + (
            f"{top.runs:,} runs the busiest master did {share:.0%} of the cluster's Redis work "
            if top
            else "no level "
        )
        + f"(an even split would be {1 / masters:.0%}; the 64 index partitions are spread "
        "over equal slot ranges, so the split follows the masters' slot ranges). **Rule for "
        "a cluster: running runs ≈ (the one-Redis rule) / (the busiest master's share)** = "
        f"{rule:,.0f} / {share:.2f} ≈ **{cluster:,.0f}** for {masters} masters at a "
        f"{args.step_s:g} s step and the {settings.lease_ttl_s:g} s lease (prefork), i.e. "
        f"{cluster / rule:.1f}x the one-Redis rule computed with these masters' costs; a "
        "cluster master spends more per operation than a lone Redis (compare the costs with "
        "the Capacity section's), so against one Redis the gain is smaller. With more masters "
        "it grows the same way while the partitions outnumber the masters several times over.",
    ]
    value = (
        f"busiest master {share:.0%} of the work at {top.runs:,} runs; rule ≈ {cluster:,.0f} "
        f"runs on {masters} masters ({cluster / rule:.1f}x one master at the cluster's costs)"
        if top
        else "no level measured"
    )
    return "\n".join(lines), Target("capacity.cluster_runs", value, None)


@contextmanager
def cluster_target(masters: int, aof: bool) -> Iterator[tuple[str, str, str]]:
    """A private Redis Cluster on loopback: (url, description, Redis version)."""
    with (
        tempfile.TemporaryDirectory(prefix="capbench-cluster-") as home,
        LocalCluster(Path(home) / "cluster", masters=masters, aof=aof) as cluster,
    ):
        version = str(cluster.node(0).info("server")["redis_version"])
        persistence = "AOF everysec" if aof else "no persistence"
        where = f"a private {masters}-master Redis Cluster on loopback ({persistence})"
        yield cluster.url, where, version


@contextmanager
def target(url: str | None, aof: bool) -> Iterator[tuple[str, str, str]]:
    """(url, description, Redis version) of the target; a private server unless given."""
    if url:
        servers = Servers(url)
        version = str(servers.clients[0].info("server")["redis_version"])
        servers.close()
        yield url, "the given Redis" + (" Cluster" if is_cluster(url) else ""), version
        return
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        if aof:  # ops/redis.conf: what production runs with
            client.config_set("appendonly", "yes")
            client.config_set("appendfsync", "everysec")
            time.sleep(0.5)  # the rewrite that enabling AOF starts
        version = str(client.info("server")["redis_version"])
        client.close()
        persistence = "AOF everysec" if aof else "no persistence"
        yield server.url, f"a private redis-server on loopback ({persistence})", version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    parser.add_argument("--levels", default="1000,5000,10000,20000,50000")
    parser.add_argument("--processes", type=int, default=4, help="load-generating processes")
    parser.add_argument("--runs-per-worker", type=int, default=1, help="1 = prefork")
    parser.add_argument("--step-s", type=float, default=5.0, help="one save per run per step")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--threshold", type=float, default=0.1, help="of the lease margin")
    parser.add_argument("--calibration-ops", type=int, default=3_000)
    parser.add_argument("--idle-s", type=float, default=2.0, help="Redis idle CPU window")
    parser.add_argument("--no-aof", action="store_true", help="private server without AOF")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    parser.add_argument("--cluster", action="store_true", help="a private Redis Cluster")
    parser.add_argument("--masters", type=int, default=3, help="with --cluster")
    args = parser.parse_args()
    settings = Settings.model_construct()  # the defaults, whatever the environment says
    limit_s = threshold_s(settings, args.threshold)
    machine = Machine.capture()
    levels: list[Level] = []
    chosen = (
        cluster_target(args.masters, not args.no_aof)
        if args.cluster and not args.redis_url
        else target(args.redis_url, not args.no_aof)
    )
    with chosen as (url, where, version):
        masters = len(Servers(url).clients)
        cal = calibrate(url, settings, args.calibration_ops, args.idle_s)
        print(f"calibration: {cal}", flush=True)
        for n in (int(x) for x in args.levels.split(",")):
            level = run_level(args, url, n, settings)
            level.verdict = judge(level, limit_s)
            levels.append(level)
            print(
                f"{n:>7,} runs: renew p99 {_ms(level.renew, 0.99)} ms, probe p99 "
                f"{_ms(level.probe, 0.99)} ms, save p99 {_ms(level.save, 0.99)} ms, lag p99 "
                f"{_ms(level.lag, 0.99)} ms, Redis CPU {level.redis_cpu:.0%}, "
                f"{level.commands_per_s:,.0f} cmd/s, generators {level.client_cpu:.2f} cores, "
                f"box {level.box_cpu:.0%}, done {level.done:,}/{level.due:,}: {level.verdict}",
                flush=True,
            )
            if level.verdict != "ok":
                break
    machine.finish(redis_version=version)
    body, result = render(args, settings, cal, levels, limit_s, where, masters)
    print(body)
    if not args.no_write:
        section = "Capacity on Redis Cluster" if masters > 1 else "Capacity"
        write_section(section, body, machine, [result])
        print(f"wrote the {section} section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
