"""``check``, the deployment half: agents file, live workers, queue depth, stranded messages.

A worker is "alive" while its advertisement in the agent directory lives (``fleet``: each
worker refreshes it with a TTL); it says which agents and queues the worker serves, so a
queue with runs waiting and nobody consuming it is named (no broadcast, no reply queue).
Stranded messages are ``executus.run`` messages on a broker list that is none of this
deployment's queues (``send_task`` without ``queue=`` lands on Celery's default ``celery``
queue, which no executus worker reads).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator

import redis

from executus_worker.cli.check.findings import Finding
from executus_worker.cli.processes import all_queues
from executus_worker.client import Client
from executus_worker.errors import ConfigError
from executus_worker.publish import TASK_RUN
from executus_worker.redis_connect import connect
from executus_worker.settings import Settings

PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: <queue><sep><priority> per priority step
PRIORITY_STEPS = (3, 6, 9)  # 0 is the queue's own name
SCAN_LIMIT = 100_000  # keys looked at for stranded messages: a bound on a huge shared Redis
PEEK = 100  # messages read from the head of each foreign list


def fleet_checks(settings: Settings) -> Iterator[Finding]:
    yield agents_finding(settings)
    consumers = yield from _workers(settings)
    if settings.broker_is_amqp:
        # Queue depths and stranded messages are read from a Redis broker's lists; RabbitMQ
        # shows both in its own tools (rabbitmqctl list_queues, the management UI).
        yield Finding("ok", "queues", "RabbitMQ broker: see rabbitmqctl list_queues")
        return
    client = connect(
        settings.effective_broker_url,
        sentinel_master=settings.effective_broker_sentinel_master,
        socket_connect_timeout=3,
        socket_timeout=5,
    )
    try:
        yield from _queues(client, settings, consumers)
        yield _stranded(client, settings)
    except redis.RedisError as exc:
        yield Finding("fail", "queues", f"cannot read the broker's queues: {exc}")
    finally:
        client.close()


def agents_finding(settings: Settings) -> Finding:
    """The agents file loaded as a worker loads it, and every factory imported."""
    # The registry and the model adapters only for `check`, not for every CLI command.
    from executus_worker.core.agents import AgentRegistry  # noqa: PLC0415
    from executus_worker.models.declarative import declared_agents  # noqa: PLC0415

    path = settings.agents_file
    try:
        registry = AgentRegistry.with_builtins(agents_file=path, declared=declared_agents(settings))
        registry.load_all()  # imports every factory, as a worker will on first use
    except ConfigError as exc:
        return Finding("fail", "agents", f"EXECUTUS_AGENTS_FILE={path}: {exc}")
    names = registry.names()
    source = f"from {path}" if path else "built-in only (EXECUTUS_AGENTS_FILE not set)"
    return Finding("ok", "agents", f"{len(names)} agent(s) {source}: {', '.join(names)}")


def _workers(settings: Settings) -> Generator[Finding, None, dict[str, list[str]]]:
    """Yields the worker findings; returns queue -> the live workers consuming it."""
    client = Client(settings)
    try:
        directory = client.agents()
    finally:
        client.close()
    consumers: dict[str, list[str]] = {}
    for ad in directory.workers:
        for queue in ad.queues:
            consumers.setdefault(queue, []).append(ad.worker)
    if not directory.workers:
        yield Finding(
            "warn", "workers",
            "no live worker on this Redis and key prefix: queued runs wait until one starts "
            "(executus-worker worker)",
        )  # fmt: skip
    for ad in directory.workers:
        served = ", ".join(ad.queues) or "no queues"
        if ad.error:
            yield Finding("fail", "workers", f"{ad.worker} serves no agents: {ad.error}")
        else:
            yield Finding("ok", "workers", f"{ad.worker} is alive, consuming {served}")
    return consumers


def queue_depth(client: redis.Redis, queue: str) -> int:
    names = [queue, *(f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return sum(int(n) for n in pipe.execute())


def _queues(
    client: redis.Redis, settings: Settings, consumers: dict[str, list[str]]
) -> Iterator[Finding]:
    for queue in all_queues(settings):
        depth = queue_depth(client, queue)
        served = consumers.get(queue, [])
        detail = f"{depth} message(s) waiting on {queue!r}"
        if served:
            yield Finding("ok", "queues", f"{detail}, consumed by {', '.join(served)}")
        elif depth:
            yield Finding("warn", "queues", f"{detail} and no live worker consumes it")
        else:
            yield Finding("ok", "queues", f"{detail}; no live worker consumes it")


def _stranded(client: redis.Redis, settings: Settings) -> Finding:
    ours = set(all_queues(settings))
    found: dict[str, int] = {}
    scanned = 0
    for raw in client.scan_iter(count=1000, _type="list"):
        scanned += 1
        name = raw.decode(errors="replace")
        base = name.split(PRIORITY_SEP, 1)[0]
        if base not in ours and not name.startswith(("_kombu.", "unacked")):
            count = sum(_is_run(m) for m in client.lrange(raw, 0, PEEK - 1))
            if count:
                found[name] = count
        if scanned >= SCAN_LIMIT:
            break
    if not found:
        bounded = f" (first {SCAN_LIMIT} lists)" if scanned >= SCAN_LIMIT else ""
        return Finding("ok", "stranded", f"no {TASK_RUN} message on another queue{bounded}")
    where = ", ".join(f"{n} on {q!r}" for q, n in sorted(found.items()))
    return Finding(
        "warn",
        "stranded",
        f"{TASK_RUN} messages on queues no executus worker reads: {where} (publish to "
        f"EXECUTUS_DEFAULT_QUEUE={settings.default_queue!r} or a tier queue in "
        "EXECUTUS_TIER_QUEUES)",
    )


def _is_run(raw: bytes | str) -> bool:
    try:
        message = json.loads(raw)
    except ValueError:
        return False
    headers = message.get("headers") if isinstance(message, dict) else None
    return isinstance(headers, dict) and headers.get("task") == TASK_RUN
