"""Re-publishing recovered runs on each broker: 10,000 ``executus.run`` messages, batched.

What a recovery sweep's publish step costs on each supported broker, with the publisher the
worker uses there:

- Redis: ``BatchPublisher`` (pipelined multi-value LPUSH, one round trip per 1,000 messages);
  target < 1 s for 10,000.
- RabbitMQ: ``KombuPublisher`` (kombu publishes on one channel, publisher confirms awaited
  once per batch of 1,000), and for comparison one confirm round trip per message.

Every message is checked to have arrived (queue length / passive declare). The RabbitMQ queue
is a fresh one and is deleted afterwards; pass ``--amqp-url`` with a vhost of your own.

    .venv/bin/python bench/broker_publish_bench.py [--runs 10000] [--repeats 3]
        [--amqp-url amqp://guest:guest@127.0.0.1:5672/] [--no-write]

Writes its table under ``## Broker publish`` in bench/RESULTS.md (other sections left alone).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

import redis
from kombu import Connection
from results import Machine, med_range, write_section

from executus_worker.broker import run_queue
from executus_worker.broker_publish import KombuPublisher
from executus_worker.core.models import RunRequest
from executus_worker.embedded import EmbeddedRedis
from executus_worker.publish import BatchPublisher, RunMessage

TARGET_REDIS_S = 1.0


def messages(n: int, queue: str) -> list[RunMessage]:
    request = RunRequest(agent="demo.counter", input={"steps": 5, "step_s": 0.1})
    return [
        RunMessage(f"bench-{i:06d}", request.model_copy(update={"run_id": f"bench-{i:06d}"})
                   .to_json(), queue)
        for i in range(n)
    ]  # fmt: skip


def timed(publish: Callable[[], int], expected: int) -> float:
    started = time.perf_counter()
    count = publish()
    elapsed = time.perf_counter() - started
    if count != expected:
        raise SystemExit(f"published {count}, want {expected}")
    return elapsed


def redis_rounds(n: int, repeats: int) -> list[float]:
    queue = "bench-publish"
    batch = messages(n, queue)
    rounds = []
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        for _ in range(repeats):
            client.delete(queue)
            rounds.append(timed(lambda: BatchPublisher(client).publish_many(batch), n))
            if client.llen(queue) != n:
                raise SystemExit(f"redis queue holds {client.llen(queue)}, want {n}")
        client.close()
    return rounds


def rabbit_rounds(url: str, n: int, repeats: int, batch_size: int) -> list[float]:
    queue = f"bench-publish-{uuid.uuid4().hex[:8]}"
    batch = messages(n, queue)
    rounds = []
    try:
        for _ in range(repeats):
            with Connection(url) as conn:
                run_queue(queue).bind(conn.default_channel).declare()
                conn.default_channel.queue_purge(queue)
            with KombuPublisher(url, batch_size=batch_size) as publisher:
                rounds.append(timed(lambda p=publisher: p.publish_many(batch), n))  # type: ignore[misc]
                depth = publisher.queue_depth(queue)
            if depth != n:
                raise SystemExit(f"rabbitmq queue holds {depth}, want {n}")
    finally:
        with Connection(url) as conn:
            run_queue(queue).bind(conn.default_channel).delete()
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    n = args.runs
    machine = Machine.capture()
    single_n = min(n, 2_000)

    on_redis = redis_rounds(n, args.repeats)
    on_rabbit = rabbit_rounds(args.amqp_url, n, args.repeats, batch_size=1_000)
    on_rabbit_single = rabbit_rounds(args.amqp_url, single_n, 1, batch_size=1)[0]

    redis_s, rabbit_s = statistics.median(on_redis), statistics.median(on_rabbit)
    verdict = "PASS" if redis_s < TARGET_REDIS_S else "FAIL"
    single_us = on_rabbit_single / single_n * 1e6
    print(f"redis    {n} messages: median {redis_s:.3f}s {sorted(on_redis)} {verdict}")
    print(f"rabbitmq {n} messages, confirms per 1000: median {rabbit_s:.3f}s {sorted(on_rabbit)}")
    print(f"rabbitmq one confirm per message: {single_us:.0f} us/message")

    machine.finish()
    body = (
        f"`bench/broker_publish_bench.py --runs {n} --repeats {args.repeats}` -- re-publishing "
        f"{n:,} recovered `executus.run`\n"
        "messages with the publisher the worker uses on each broker (the publish step of a\n"
        "recovery sweep; the whole sweep is under Recovery). Private redis-server on loopback;\n"
        "the machine's RabbitMQ on loopback, a fresh durable queue, persistent messages. On a\n"
        "shared box RabbitMQ throttles a publisher it cannot keep up with, so its figure is\n"
        "the broker's CPU share here, not the client's cost. Cells: median (min-max).\n\n"
        "| broker, publisher | result |\n|---|---|\n"
        f"| Redis, pipelined LPUSH (batches of 1,000) | **{med_range(on_redis, unit='s')}** "
        f"({verdict}: target < {TARGET_REDIS_S:g} s) |\n"
        f"| RabbitMQ, kombu + publisher confirms awaited per 1,000 | "
        f"**{med_range(on_rabbit, unit='s')}** ({n / rabbit_s:,.0f} msg/s) |\n"
        f"| RabbitMQ, one confirm round trip per message ({single_n:,}) | "
        f"{single_us:.0f} us/message ({single_us * n / 1e6:.1f} s per {n:,}) |\n"
    )
    print(body)
    if not args.no_write:
        write_section("Broker publish", body, machine)
        print("wrote the Broker publish section of bench/RESULTS.md")


if __name__ == "__main__":
    main()
