"""Audit benchmark: what the run event stream costs a step, a run and a recovery sweep.

    python bench/audit_bench.py [--reps 3] [--no-write]

Starts a private redis-server and measures, each figure the median of ``--reps`` repetitions:

- per step, on the run's thread, at transcript sizes 10 / 1,000 / 5,000: a checkpoint save
  alone vs the save plus its ``step`` event through the worker's path (``StreamAudit`` on
  ``RedisEventLog``: the run queues the event, a background thread writes it). The two
  alternate step by step, so noise hits them alike;
- the worker's per-run cost in process (``RunHandler.handle`` over no-op runs, wired as
  ``worker/runtime.py`` does) with the event stream on and off, wall and CPU time, the
  writer's final flush included.

Writes the ``## Audit`` section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import redis
from results import Machine, med_range, pct, write_section

from executus_worker.batteries.audit import StreamAudit
from executus_worker.checkpoint.events import RedisEventLog
from executus_worker.checkpoint.handle import RunHandle, StoreCheckpointerFactory
from executus_worker.checkpoint.keys import KeySchema
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.core.agents import AgentRegistry
from executus_worker.core.executor import execute
from executus_worker.core.models import Checkpoint, Message, RunInfo, RunRequest
from executus_worker.core.ports import Deps
from executus_worker.core.stop import StopToken
from executus_worker.embedded import EmbeddedRedis
from executus_worker.settings import Settings
from executus_worker.worker.runs import RunHandler
from executus_worker.worker.wiring import build_batteries

SIZES = (10, 1_000, 5_000)
STEP_DATA: dict[str, Any] = {
    "iteration": 7, "phase": None, "messages": 1, "done": False,
    "input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.0042,
}  # fmt: skip


def message(i: int) -> Message:
    return Message(role="assistant", content=f"step {i} " + "lorem ipsum dolor " * 26)


def claimed_handle(store: RedisStore, run_id: str, size: int) -> tuple[RunHandle, Checkpoint]:
    store.register(RunRequest(agent="bench"), run_id=run_id, queue="bench", now=time.time())
    claim = store.claim(run_id, owner="bench", lease_ttl_s=600, max_attempts=5, now=time.time())
    assert claim.fence is not None
    handle = RunHandle(store, run_id, claim.fence)
    checkpoint = Checkpoint(run_id=run_id, messages=[message(i) for i in range(size)])
    handle.save(checkpoint, force=True)
    return handle, checkpoint


def bench_steps(client: redis.Redis, size: int, runs: int, steps: int) -> dict[str, float]:
    client.flushall()
    prefix = f"audit{size}"
    store = RedisStore(client, key_prefix=prefix)
    stream = StreamAudit(RedisEventLog(client, KeySchema(prefix)))
    samples: dict[str, list[float]] = {"save": [], "event": []}
    for r in range(runs):
        plain, cp_plain = claimed_handle(store, f"plain-{r}", size)
        audited, cp_audited = claimed_handle(store, f"audited-{r}", size)
        info = RunInfo(run_id=audited.run_id, agent="bench", epoch=audited.fence.epoch)
        for i in range(steps):
            for cp in (cp_plain, cp_audited):
                cp.messages.append(message(size + i))
                cp.iteration += 1
            t0 = time.perf_counter()
            plain.save(cp_plain)
            t1 = time.perf_counter()
            # The executor's order: the step's audit event, then its save.
            stream.record(info, "step", STEP_DATA)
            audited.save(cp_audited)
            t2 = time.perf_counter()
            samples["save"].append(t1 - t0)
            samples["event"].append(t2 - t1)
    assert stream.flush(30.0), "the audit writer did not catch up"
    written = sum(client.xlen(KeySchema(prefix).events(f"audited-{r}")) for r in range(runs))
    assert written == runs * steps, (written, runs * steps)
    out: dict[str, float] = {}
    for name, values in samples.items():
        out[f"{name}_p50"] = pct(values, 0.5) * 1e3
        out[f"{name}_p99"] = pct(values, 0.99) * 1e3
    return out


def per_run_ms(client: redis.Redis, url: str, n: int, audit_stream: bool) -> tuple[float, float]:
    """``RunHandler.handle`` per no-op run (demo.counter, 1 step), in process, no Celery:
    (wall ms, CPU ms) per run."""
    client.flushall()
    settings = Settings(redis_url=url, audit_stream=audit_stream)
    store = RedisStore(client, key_prefix=settings.key_prefix)
    batteries = build_batteries(settings, client)
    messages = []
    for i in range(n):
        run_id = f"noop-{i}"
        request = RunRequest(run_id=run_id, agent="demo.counter", input={"steps": 1, "step_s": 0})
        store.register(request, run_id=run_id, queue="executus", now=time.time())
        messages.append([run_id, request.to_json()])
    handler = RunHandler(
        store=store,
        agents=AgentRegistry.with_builtins(),
        deps=Deps(
            checkpoints=StoreCheckpointerFactory(store),
            audit=batteries.audit,
            critic=batteries.critic,
        ),
        settings=settings,
        drain=StopToken(),
        execute=execute,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    for message_args in messages:
        handler.handle(message_args, {})
    batteries.close()  # the events still waiting are part of the runs' cost
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if audit_stream:
        names = [e.event for e in RedisEventLog(client, store.keys).read(f"noop-{n - 1}")]
        assert names == ["claimed", "started", "step", "completed"], names
    return wall / n * 1e3, cpu / n * 1e3


def run(args: argparse.Namespace) -> tuple[str, str]:  # (body, Redis version)
    server = EmbeddedRedis()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        steps = {
            size: [bench_steps(client, size, args.runs, args.steps) for _ in range(args.reps)]
            for size in SIZES
        }
        on: list[tuple[float, float]] = []
        off: list[tuple[float, float]] = []
        for _ in range(args.reps):  # alternate, so drift hits both
            off.append(per_run_ms(client, server.url, args.noop_runs, audit_stream=False))
            on.append(per_run_ms(client, server.url, args.noop_runs, audit_stream=True))
        version = client.info("server")["redis_version"]
        client.close()
    finally:
        server.stop()
    return section(args, steps, on, off), version


def section(
    args: argparse.Namespace,
    steps: dict[int, list[dict[str, float]]],
    on: list[tuple[float, float]],
    off: list[tuple[float, float]],
) -> str:
    def med(size: int, key: str) -> float:
        return statistics.median(sample[key] for sample in steps[size])

    lines = [
        f"`python bench/audit_bench.py --reps {args.reps}`, private redis-server. Each figure "
        f"is the median of {args.reps} repetitions (compare figures within this section, not "
        "across sections).",
        "",
        "### Per step: a checkpoint save with and without its `step` event",
        "",
        f"{args.runs} runs per size, {args.steps} one-message steps each, the two variants "
        "alternating step by step. Time on the run's thread, ms. *With event* is what the "
        "executor does: `StreamAudit.record` (the event is queued; a background thread "
        "writes queued events in one round trip, a script call per run), then the save. The "
        "writer's own work shows here only as what it takes from the run's thread (the GIL).",
        "",
        "| transcript | save p50 | save p99 | save + event p50 | save + event p99 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size in SIZES:
        lines.append(
            f"| {size:,} | {med(size, 'save_p50'):.3f} | {med(size, 'save_p99'):.3f} "
            f"| {med(size, 'event_p50'):.3f} | {med(size, 'event_p99'):.3f} |"
        )
    extra = [med(size, "event_p50") - med(size, "save_p50") for size in SIZES]
    wall_on, wall_off = (statistics.median(x[0] for x in v) for v in (on, off))
    cpu_on, cpu_off = (statistics.median(x[1] for x in v) for v in (on, off))
    lines += [
        "",
        "The event adds "
        + " / ".join(f"{x:.3f}" for x in extra)
        + " ms at p50 (10 / 1,000 / 5,000 messages) to the run's thread.",
        "",
        "### Per run",
        "",
        "| measure | stream off | stream on | difference |",
        "|---|---:|---:|---:|",
        f"| worker per no-op run in process (`RunHandler.handle`, 1 step), wall ms "
        f"| {med_range([x[0] for x in off])} | {med_range([x[0] for x in on])} "
        f"| {wall_on - wall_off:+.3f} "
        f"({100 * (wall_on / wall_off - 1):+.0f}%) |",
        f"| the same, CPU ms | {med_range([x[1] for x in off])} "
        f"| {med_range([x[1] for x in on])} | {cpu_on - cpu_off:+.3f} "
        f"({100 * (cpu_on / cpu_off - 1):+.0f}%) |",
        "",
        "Wall and CPU time include the writer's final flush (`Batteries.close`), so the "
        "stream-on column pays for every event of its runs. A no-op run's events are "
        "`claimed`, `started`, its one `step` and `completed`; the recovery sweep writes "
        "nothing (a recovered run's `recovered` event rides with its next attempt's "
        "`claimed`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10, help="runs per transcript size")
    parser.add_argument("--steps", type=int, default=50, help="steps measured per run")
    parser.add_argument("--noop-runs", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    machine = Machine.capture()
    text, version = run(args)
    machine.finish(redis_version=version)
    print(text)
    if not args.no_write:
        write_section("Audit", text, machine)
        print("wrote the Audit section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
