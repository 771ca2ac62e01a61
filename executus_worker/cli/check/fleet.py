"""``check``, the deployment half: agents file, live workers, queue depth, stranded messages.

A worker is "alive" if it answers Celery's remote-control ``active_queues`` broadcast within
``WORKER_REPLY_S``; that also says which queues each one consumes, so a queue with runs
waiting and nobody consuming it is named. Stranded messages are ``executus.run`` messages on
a broker list that is none of this deployment's queues (``send_task`` without ``queue=``
lands on Celery's default ``celery`` queue, which no executus worker reads).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from typing import Any

import redis

from executus_worker.cli.check.findings import Finding
from executus_worker.cli.processes import all_queues
from executus_worker.core.agents import AgentRegistry
from executus_worker.errors import ConfigError
from executus_worker.publish import TASK_RUN
from executus_worker.settings import Settings

WORKER_REPLY_S = 2.0
PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: <queue><sep><priority> per priority step
PRIORITY_STEPS = (3, 6, 9)  # 0 is the queue's own name
SCAN_LIMIT = 100_000  # keys looked at for stranded messages: a bound on a huge shared Redis
PEEK = 100  # messages read from the head of each foreign list


def fleet_checks(settings: Settings) -> Iterator[Finding]:
    yield agents_finding(settings)
    consumers = yield from _workers(settings)
    client = redis.Redis.from_url(
        settings.effective_broker_url, socket_connect_timeout=3, socket_timeout=5
    )
    try:
        yield from _queues(client, settings, consumers)
        yield _stranded(client, settings)
    except redis.RedisError as exc:
        yield Finding("fail", "queues", f"cannot read the broker's queues: {exc}")
    finally:
        client.close()


def agents_finding(settings: Settings) -> Finding:
    path = settings.agents_file
    try:
        registry = AgentRegistry.with_builtins(agents_file=path)
        registry.load_all()  # imports every factory, as a worker will on first use
    except ConfigError as exc:
        return Finding("fail", "agents", f"EXECUTUS_AGENTS_FILE={path}: {exc}")
    names = registry.names()
    source = f"from {path}" if path else "built-in only (EXECUTUS_AGENTS_FILE not set)"
    return Finding("ok", "agents", f"{len(names)} agent(s) {source}: {', '.join(names)}")


def _workers(settings: Settings) -> Generator[Finding, None, dict[str, list[str]]]:
    """Yields the worker findings; returns queue -> the workers consuming it."""
    from executus_worker.worker.factory import create_app  # noqa: PLC0415 -- Celery, on demand

    app = create_app(settings)
    try:
        replies: dict[str, Any] | None = app.control.inspect(timeout=WORKER_REPLY_S).active_queues()
    except Exception as exc:  # kombu's OperationalError, a CELERY_* override, ...: a finding
        yield Finding("fail", "workers", f"cannot ask the workers over the broker: {exc}")
        return {}
    finally:
        app.close()
    consumers: dict[str, list[str]] = {}
    for hostname, queues in sorted((replies or {}).items()):
        for queue in queues or ():
            consumers.setdefault(str(queue.get("name")), []).append(hostname)
    if not replies:
        yield Finding(
            "warn", "workers",
            f"no worker answered within {WORKER_REPLY_S:g} s: queued runs wait until one "
            "starts (executus-worker worker)",
        )  # fmt: skip
        return consumers
    for hostname, queues in sorted(replies.items()):
        served = ", ".join(sorted(str(q.get("name")) for q in queues or ())) or "no queues"
        yield Finding("ok", "workers", f"{hostname} is alive, consuming {served}")
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
