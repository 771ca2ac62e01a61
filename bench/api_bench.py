"""The HTTP API's cost: enqueue and status latency over real HTTP, enqueue throughput with
concurrent clients, and what open event streams cost Redis.

A real ``executus-worker api`` process (uvicorn, one event loop) on a private redis-server; no
worker runs (the live-agent check is off), so enqueued runs stay queued and each stream
follows a quiet run -- the steady state of a stream waiting on a long step.

- latency: N sequential enqueues (fresh run ids) and N status GETs on one keep-alive connection,
  client-measured wall time per request;
- throughput: the same enqueues from C threads, each with its own connection;
- streams: S open event streams for T seconds, Redis commands per second (INFO commandstats
  delta, minus an idle baseline) -- what sizing EXECUTUS_API_MAX_STREAMS and
  EXECUTUS_API_STREAM_POLL_S means for Redis.

Run: ``python bench/api_bench.py [--requests 1000] [--threads 8] [--streams 50]``.
Writes the ``## HTTP API`` section of bench/RESULTS.md (other sections are left alone).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import redis
from results import Machine, pct, write_section

from executus_worker.embedded import EmbeddedRedis, free_port

EXECUTUS = str(Path(sys.executable).with_name("executus-worker"))
TOKEN = "bench-token-" + "x" * 20
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def start_api(redis_url: str, port: int, poll_s: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECUTUS_")}
    env |= {
        "EXECUTUS_REDIS_URL": redis_url,
        "EXECUTUS_KEY_PREFIX": f"bench{uuid.uuid4().hex[:6]}",
        "EXECUTUS_API_PORT": str(port),
        "EXECUTUS_API_TOKEN": TOKEN,
        "EXECUTUS_CHECK_AGENTS_ON_ENQUEUE": "false",
        "EXECUTUS_API_STREAM_POLL_S": str(poll_s),
        "EXECUTUS_API_MAX_STREAMS": "10000",
    }
    proc = subprocess.Popen(
        [EXECUTUS, "api", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("the API did not start")
        time.sleep(0.1)


def enqueue_body() -> bytes:
    run_id = uuid.uuid4().hex
    return json.dumps({"run_id": run_id, "agent": "demo.counter", "input": {"steps": 1}}).encode()


def timed(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> float:
    started = time.perf_counter()
    conn.request(method, path, body=body, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    assert response.status in {200, 201}, response.status
    return time.perf_counter() - started


def latency(port: int, n: int) -> dict[str, list[float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    enqueues, statuses, run_ids = [], [], []
    for _ in range(n):
        body = enqueue_body()
        run_ids.append(json.loads(body)["run_id"])
        enqueues.append(timed(conn, "POST", "/v1/runs", body))
    for run_id in run_ids:
        statuses.append(timed(conn, "GET", f"/v1/runs/{run_id}", None))
    conn.close()
    return {"enqueue": enqueues, "status": statuses}


def throughput(port: int, n: int, threads: int) -> float:
    per_thread = n // threads

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(per_thread):
            timed(conn, "POST", "/v1/runs", enqueue_body())
        conn.close()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return per_thread * threads / (time.perf_counter() - started)


def commands(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def stream_cost(port: int, r: redis.Redis, streams: int, seconds: float) -> tuple[float, float]:
    """(Redis commands per second with ``streams`` open, the same with none open)."""
    before = commands(r)
    time.sleep(seconds)
    idle = (commands(r) - before) / seconds
    conns = []
    for _ in range(streams):
        body = enqueue_body()
        run_id = json.loads(body)["run_id"]
        setup = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        timed(setup, "POST", "/v1/runs", body)
        setup.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/v1/runs/{run_id}/events", headers=HEADERS)
        response = conn.getresponse()
        assert response.status == 200
        conns.append((conn, response))
    time.sleep(1.0)  # every stream past its opening reads
    before = commands(r)
    time.sleep(seconds)
    busy = (commands(r) - before) / seconds
    for conn, _ in conns:
        conn.close()
    return busy, idle


def section(args: argparse.Namespace, lat: dict[str, list[float]], rps: float,
            busy: float, idle: float) -> str:  # fmt: skip
    per_stream = (busy - idle) / args.streams
    rows = [
        f"`python bench/api_bench.py --requests {args.requests} --threads {args.threads} "
        f"--streams {args.streams}`. One `executus-worker api` process (uvicorn, one event "
        "loop), private redis-server, no worker, client and server on the same box.",
        "",
        "| measure | result |",
        "|---|---|",
    ]
    for name, samples in lat.items():
        rows.append(
            f"| {name}, sequential on one connection ({len(samples)}) | p50 "
            f"{pct(samples, 0.5) * 1e3:.2f} ms, p99 {pct(samples, 0.99) * 1e3:.2f} ms |"
        )
    rows += [
        f"| enqueue throughput, {args.threads} client threads | {rps:,.0f} runs/s |",
        f"| Redis commands/s, {args.streams} open streams on quiet runs (poll "
        f"{args.poll_s} s) | {busy - idle:,.0f} ({per_stream:.1f} per stream; "
        f"{per_stream * args.poll_s:.1f} per poll) |",
        "",
        "An enqueue is serialised in the server (the publisher is not promised thread-safe) "
        "and costs the registration script, the publish and the audit entry. A stream on a "
        "quiet run reads the run record and its audit entries each poll; the transcript only "
        "when a checkpoint moved the record.",
    ]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--stream-seconds", type=float, default=5.0)
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument("--no-write", action="store_true", help="Print only; leave RESULTS.md.")
    args = parser.parse_args()
    machine = Machine.capture()
    with EmbeddedRedis() as server:
        port = free_port()
        proc = start_api(server.url, port, args.poll_s)
        r = redis.Redis.from_url(server.url)
        version = r.info("server")["redis_version"]
        try:
            timed_warmup = latency(port, 50)  # connections, scripts, imports
            del timed_warmup
            lat = latency(port, args.requests)
            rps = throughput(port, args.requests, args.threads)
            busy, idle = stream_cost(port, r, args.streams, args.stream_seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            r.close()
    machine.finish(redis_version=version)
    text = section(args, lat, rps, busy, idle)
    print(text)
    print("median enqueue ms:", round(statistics.median(lat["enqueue"]) * 1000, 3))
    if not args.no_write:
        write_section("HTTP API", text, machine)
        print("wrote the HTTP API section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
