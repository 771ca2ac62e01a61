"""Checkpoint benchmark: RedisStore's append-only save vs a naive whole-transcript SET.

    python bench/checkpoint_bench.py [--redis-url URL] [--no-write]

Without a URL it starts a private redis-server (EmbeddedRedis). Measures, in one run:

- save latency p50/p99 at transcript sizes 10, 100, 1,000, 5,000 (messages of ~500 bytes):
  RedisStore through RunHandle (one new message per save) vs SET of the whole checkpoint JSON;
- bytes sent to Redis per save (INFO total_net_input_bytes), both stores;
- load of a 1,000-message checkpoint vs GET + parse of the same transcript as one JSON value;
- a full sweep of 10,000 interrupted runs.

Each figure is the median over ``--reps`` repetitions. Results replace the ``## Checkpoint``
section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from pydantic import TypeAdapter
from results import Machine, med_range, pct, write_section

from executus_worker.checkpoint import codec
from executus_worker.checkpoint.handle import RunHandle
from executus_worker.checkpoint.redis_store import RedisStore
from executus_worker.checkpoint.store import Fence
from executus_worker.core.models import Checkpoint, Message, RunRequest
from executus_worker.embedded import EmbeddedRedis

SIZES = (10, 100, 1_000, 5_000)
MESSAGES = TypeAdapter(list[Message])


def message(i: int) -> Message:
    # ~500 bytes of JSON per message, like a short assistant turn.
    return Message(role="assistant", content=f"step {i} " + "lorem ipsum dolor " * 26)


INFO_BYTES = len(b"*2\r\n$4\r\ninfo\r\n$5\r\nstats\r\n")


def bytes_in(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("stats")
    return int(stats["total_net_input_bytes"])


def fresh_run(store: RedisStore, run_id: str) -> Fence:
    store.register(RunRequest(agent="bench"), run_id=run_id, queue="bench", now=time.time())
    claim = store.claim(run_id, owner="bench", lease_ttl_s=600, max_attempts=5, now=time.time())
    assert claim.fence is not None
    return claim.fence


def bench_saves(
    client: redis.Redis, prefix: str, size: int, runs: int, steps: int
) -> dict[str, float]:
    """``runs`` runs preloaded with ``size`` messages, then ``steps`` one-message saves each
    (so the transcript is between size and size + steps while it is measured). Ours and the
    naive save alternate step by step, so machine noise hits both alike."""
    store = RedisStore(client, key_prefix=prefix)
    ours: list[float] = []
    naive_t: list[float] = []
    ours_bytes = naive_bytes = 0
    for r in range(runs):
        run_id = f"save-{size}-{r}"
        handle = RunHandle(store, run_id, fresh_run(store, run_id))
        cp = Checkpoint(run_id=run_id, messages=[message(i) for i in range(size)])
        handle.save(cp, force=True)  # the existing transcript, written once
        naive_key = f"{prefix}:naive:{size}:{r}"
        naive = Checkpoint(run_id=run_id, messages=[message(i) for i in range(size)])
        client.set(naive_key, naive.model_dump_json())
        for i in range(steps):
            cp.messages.append(message(size + i))
            cp.iteration += 1
            before = bytes_in(client)
            t0 = time.perf_counter()
            handle.save(cp)
            ours.append(time.perf_counter() - t0)
            middle = bytes_in(client)

            naive.messages.append(message(size + i))
            naive.iteration += 1
            t0 = time.perf_counter()
            client.set(naive_key, naive.model_dump_json())
            naive_t.append(time.perf_counter() - t0)
            after = bytes_in(client)
            # Each delta also counts the one INFO command that reads it; remove that.
            ours_bytes += middle - before - INFO_BYTES
            naive_bytes += after - middle - INFO_BYTES
    return {
        "ours_p50": pct(ours, 0.5) * 1e3,
        "ours_p99": pct(ours, 0.99) * 1e3,
        "naive_p50": pct(naive_t, 0.5) * 1e3,
        "naive_p99": pct(naive_t, 0.99) * 1e3,
        "ours_bytes": ours_bytes / (runs * steps),
        "naive_bytes": naive_bytes / (runs * steps),
    }


def interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median ms per function, calling them in turn so noise hits all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) * 1e3 for name, v in samples.items()}


def bench_load(client: redis.Redis, prefix: str, reps: int) -> dict[str, float]:
    store = RedisStore(client, key_prefix=prefix)
    run_id = "load-1000"
    messages = [message(i) for i in range(1_000)]
    epoch = fresh_run(store, run_id)
    cp = Checkpoint(run_id=run_id, messages=messages)
    store.save_checkpoint(
        run_id, fence=epoch, base_len=0, new_messages=messages, checkpoint=cp, now=time.time()
    )
    one_key = f"{prefix}:one-value"
    # The same compact bytes we store, as one JSON array value: a like-for-like comparison.
    client.set(one_key, codec.join_items(codec.encode_messages(messages)))
    # The layout we measured and dropped: one list item per message (RPUSH / LRANGE).
    list_key = f"{prefix}:as-list"
    client.rpush(list_key, *codec.encode_messages(messages))
    ckpt_key = store.keys.ckpt(run_id)
    join_lua = client.register_script(
        "return table.concat(redis.call('LRANGE', KEYS[1], 0, -1), ',')"
    )

    def pipelined_lrange() -> Checkpoint:
        pipe = client.pipeline(transaction=True)
        pipe.hgetall(ckpt_key)
        pipe.lrange(list_key, 0, -1)
        meta, items = pipe.execute()
        return codec.decode_checkpoint(
            run_id, meta_key=ckpt_key, msgs_key=list_key, meta=meta,
            messages_json=codec.join_items(items),
        )  # fmt: skip

    def lua_joined_list() -> list[Message]:
        body = join_lua(keys=[list_key])
        return MESSAGES.validate_json(b"[" + body + b"]")

    def transcript_only() -> list[Message]:
        return store.transcript(run_id)

    def get_validate() -> list[Message]:
        raw = client.get(one_key)
        assert isinstance(raw, bytes)
        return MESSAGES.validate_json(raw)

    def get_json() -> object:
        raw = client.get(one_key)
        assert isinstance(raw, bytes)
        return json.loads(raw)

    loaded = store.load_checkpoint(run_id)
    assert loaded is not None and loaded.messages == messages
    assert pipelined_lrange().messages == messages
    assert lua_joined_list() == messages
    return interleaved(
        {
            "ours": lambda: store.load_checkpoint(run_id),
            "transcript": transcript_only,
            "lrange": pipelined_lrange,
            "lua_join": lua_joined_list,
            "get_validate": get_validate,
            "get_json": get_json,
        },
        reps,
    )


def bench_sweep(client: redis.Redis, prefix: str, runs: int) -> dict[str, float]:
    store = RedisStore(client, key_prefix=prefix)
    now = time.time()
    request = RunRequest(agent="bench", input={"steps": 3})
    pipe = client.pipeline(transaction=False)
    for i in range(runs):
        run_id = f"sweep-{i:05d}"
        fields = codec.record_fields(request, run_id=run_id, queue="bench", now=now - 60)
        fields.update(status="interrupted", attempts="1", epoch="1", interrupts="1")
        pipe.hset(store.keys.rec(run_id), mapping=fields)
        pipe.zadd(store.keys.active, {run_id: now - 60 + i * 1e-6})
        pipe.zadd(store.keys.due, {run_id: now - 60})  # interrupted: a recovery candidate
        if i % 2_000 == 1_999:
            pipe.execute()
    pipe.execute()
    t0 = time.perf_counter()
    requeued, pages = 0, 0
    while True:
        batch = store.sweep(now=now, queued_timeout_s=900, batch=1_000)
        requeued += len(batch.requeued)
        pages += 1
        if not batch.more:
            break
    elapsed = time.perf_counter() - t0
    assert requeued == runs, (requeued, runs)
    t0 = time.perf_counter()
    again = store.sweep(now=now, queued_timeout_s=900, batch=runs)
    rescan = time.perf_counter() - t0
    assert again.requeued == []
    return {"sweep_s": elapsed, "pages": pages, "rescan_s": rescan}


def cleanup(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5_000))
    for i in range(0, len(keys), 1_000):
        client.unlink(*keys[i : i + 1_000])


@contextmanager
def redis_at(url: str | None) -> Iterator[tuple[redis.Redis, str]]:
    if url:
        client = redis.Redis.from_url(url)
        yield client, "given URL"
        client.close()
        return
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        yield client, f"embedded redis-server ({server.source})"
        client.close()


def run(
    url: str | None, reps: int, runs: int, steps: int, sweep_runs: int
) -> tuple[str, str]:  # (body, Redis version)
    prefix = f"bench-{os.getpid()}"
    with redis_at(url) as (client, where):
        version = client.info("server")["redis_version"]
        saves: dict[int, list[dict[str, float]]] = {size: [] for size in SIZES}
        loads: list[dict[str, float]] = []
        sweeps: list[dict[str, float]] = []
        try:
            for rep in range(reps):
                p = f"{prefix}-{rep}"
                for size in SIZES:
                    saves[size].append(bench_saves(client, p, size, runs, steps))
                loads.append(bench_load(client, p, 200))
                sweeps.append(bench_sweep(client, p, sweep_runs))
                cleanup(client, p)
                print(f"rep {rep + 1}/{reps} done")
        finally:
            for rep in range(reps):
                cleanup(client, f"{prefix}-{rep}")
    body = report(where, reps, runs, steps, sweep_runs, saves, loads, sweeps)
    return body, version


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(
    where: str,
    reps: int,
    runs: int,
    steps: int,
    sweep_runs: int,
    saves: dict[int, list[dict[str, float]]],
    loads: list[dict[str, float]],
    sweeps: list[dict[str, float]],
) -> str:
    lines = [
        f"`python bench/checkpoint_bench.py --reps {reps}` against {where}. Each figure is the "
        f"median of {reps} repetitions (the p50 columns: median (min-max)). "
        f"Save figures: {runs} runs preloaded with N messages, then {steps} saves of one new "
        f"~500-byte message each ({runs * steps} samples; the transcript is N to N+{steps}).",
        "",
        "### Save latency and bytes per step",
        "",
        "| transcript | ours p50 ms | ours p99 ms | naive SET p50 ms | naive SET p99 ms "
        "| ours bytes/step | naive bytes/step |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in SIZES:
        rows = saves[size]
        lines.append(
            f"| {size:,} | {med_range([r['ours_p50'] for r in rows])} "
            f"| {med(rows, 'ours_p99'):.3f} "
            f"| {med_range([r['naive_p50'] for r in rows])} | {med(rows, 'naive_p99'):.3f} "
            f"| {med(rows, 'ours_bytes'):,.0f} | {med(rows, 'naive_bytes'):,.0f} |"
        )
    ours, get_v, get_j = med(loads, "ours"), med(loads, "get_validate"), med(loads, "get_json")
    lrange, lua_join = med(loads, "lrange"), med(loads, "lua_join")
    transcript = med(loads, "transcript")
    lines += [
        "",
        "ours = `RunHandle.save`: one EVALSHA (epoch check, SETRANGE of the new message over "
        "the closing bracket, meta HSET), encoding included. naive = `SET` of the whole "
        "checkpoint JSON, `model_dump_json` included. "
        "Bytes = Redis `total_net_input_bytes` per save.",
        "",
        "### Load of a 1,000-message checkpoint",
        "",
        "| method | median ms | vs GET + validate |",
        "|---|---:|---:|",
        f"| ours: `load_checkpoint` (MULTI HGETALL meta + GET transcript, one parse) "
        f"| {ours:.3f} | {ours / get_v:.2f}x |",
        f"| ours, transcript only: `transcript()` (MULTI EXISTS record + GET, one parse) "
        f"| {transcript:.3f} | {transcript / get_v:.2f}x |",
        f"| dropped layout: list per message, MULTI HGETALL + LRANGE, one parse "
        f"| {lrange:.3f} | {lrange / get_v:.2f}x |",
        f"| dropped layout: list per message, Lua `table.concat` of LRANGE, one parse "
        f"| {lua_join:.3f} | {lua_join / get_v:.2f}x |",
        f"| GET the same messages as one JSON array value + "
        f"`TypeAdapter(list[Message]).validate_json` | {get_v:.3f} | 1.00x |",
        f"| GET one JSON value + `json.loads` (dicts, not Messages) | {get_j:.3f} "
        f"| {get_j / get_v:.2f}x |",
        "",
        "### Recovery sweep",
        "",
        f"{sweep_runs:,} interrupted runs, pages of 1,000 (one pipelined round trip of per-run "
        f"CAS scripts per page), requeued with their stored requests: "
        f"**{med(sweeps, 'sweep_s') * 1e3:.0f} ms** "
        f"({med(sweeps, 'pages'):.0f} pages). A second sweep that finds them all freshly "
        f"queued (nothing to do): {med(sweeps, 'rescan_s') * 1e3:.0f} ms.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=None, help="default: start a private redis-server")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10, help="runs per transcript size")
    parser.add_argument("--steps", type=int, default=50, help="saves measured per run")
    parser.add_argument("--sweep-runs", type=int, default=10_000)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    machine = Machine.capture()
    body, version = run(args.redis_url, args.reps, args.runs, args.steps, args.sweep_runs)
    machine.finish(redis_version=version)
    print(body)
    if not args.no_write:
        write_section("Checkpoint", body, machine)
        print("wrote the Checkpoint section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
