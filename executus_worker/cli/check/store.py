"""``check``, the Redis half: reachable, fast, never evicting, persistent, Lua usable; and no
CELERY_* variable quietly pointing Celery elsewhere."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis
from kombu import Connection

from executus_worker.checkpoint.redis_index import count_active
from executus_worker.cli.check.findings import Finding
from executus_worker.redis_connect import StateClient, connect_state, is_cluster
from executus_worker.settings import Settings, redact_url

PING_SAMPLES = 20
# Celery reads these straight from the environment and lets them beat the app's own config
# (celery/app/utils.py: broker_url, broker_read_url, ...), so one stray variable silently
# points a worker or the client at another broker.
CELERY_URL_OVERRIDES = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")


def amqp_check(url: str) -> Finding:
    """The RabbitMQ broker answers (one connection, what it announces about itself)."""
    shown = redact_url(url)
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
            server = conn.connection.server_properties  # py-amqp: what the broker announced
    except Exception as exc:  # kombu raises many types for one unreachable broker
        return Finding("fail", "broker", f"cannot reach {shown}: {exc}")
    product, version = server.get("product", "AMQP broker"), server.get("version", "?")
    return Finding("ok", "broker", f"{product} {version} at {shown}")


def redis_checks(
    name: str, url: str, settings: Settings | None, *, sentinel_master: str | None = None
) -> Iterator[Finding]:
    shown = redact_url(url)
    client = connect_state(
        url,
        sentinel_master=sentinel_master,
        socket_connect_timeout=3,
        socket_timeout=5,
        decode_responses=True,
    )
    try:
        try:
            server: dict[str, Any] = client.info("server")
        except redis.RedisError as exc:
            yield Finding("fail", name, f"cannot reach {shown}: {exc}")
            return
        kind = "Redis Cluster" if is_cluster(url) else "Redis"
        yield Finding("ok", name, f"{kind} {server.get('redis_version', '?')} at {shown}")
        yield _latency(name, client)
        yield _eviction(name, client)
        yield _persistence(name, client)
        yield _lua(name, client)
        if settings is not None:
            yield _layout(client, settings)
            yield _active_runs(client, settings)
    finally:
        client.close()


def _latency(name: str, client: StateClient) -> Finding:
    samples = []
    for _ in range(PING_SAMPLES):
        start = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - start) * 1000)
    median = statistics.median(samples)
    detail = f"ping median {median:.2f} ms, max {max(samples):.2f} ms over {PING_SAMPLES}"
    # Every step costs a checkpoint round trip; past a few ms the store, not the model, dominates.
    return Finding("ok" if median < 5 else "warn", f"{name}.latency", detail)


def _eviction(name: str, client: StateClient) -> Finding:
    check = f"{name}.maxmemory-policy"
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "?")
    except redis.RedisError as exc:
        return Finding("warn", check, f"cannot read it ({exc}); it must be noeviction")
    if policy == "noeviction":
        return Finding("ok", check, "noeviction")
    return Finding(
        "warn", check, f"{policy}: Redis may evict queue, lease or run keys; use noeviction"
    )


def _persistence(name: str, client: StateClient) -> Finding:
    check = f"{name}.persistence"
    try:
        info: dict[str, Any] = client.info("persistence")
        save = client.config_get("save").get("save", "")
    except redis.RedisError as exc:
        return Finding("warn", check, f"cannot read it ({exc})")
    aof = str(info.get("aof_enabled", "0")) == "1"
    if aof:
        return Finding("ok", check, "AOF on" + (f", RDB save '{save}'" if save else ""))
    if save:
        return Finding("warn", check, f"RDB only (save '{save}'): a crash loses recent runs")
    return Finding("warn", check, "none: a Redis restart loses every queued run and checkpoint")


def _lua(name: str, client: StateClient) -> Finding:
    check = f"{name}.lua"
    try:
        # register_script goes through EVALSHA (and falls back to EVAL), the path the store
        # and kombu use; an ACL that allows EVAL but not EVALSHA is caught here.
        echoed = client.register_script("return ARGV[1]")(args=["executus"])
    except redis.RedisError as exc:
        return Finding("fail", check, f"Lua scripting is not usable: {exc}")
    if echoed != "executus":
        return Finding("fail", check, f"Lua script returned {echoed!r}")
    return Finding("ok", check, "EVAL/EVALSHA work")


def _layout(client: StateClient, settings: Settings) -> Finding:
    """The key layout the data was written with against EXECUTUS_REDIS_SHARDS (read only: a
    worker records it when it first starts, checkpoint/layout.py)."""
    keys = settings.key_schema()
    try:
        raw = client.get(keys.layout)
    except redis.RedisError as exc:
        return Finding("warn", "layout", f"cannot read {keys.layout}: {exc}")
    if raw is None:
        return Finding(
            "ok", "layout", f"none recorded yet; workers will record {keys.layout_value!r}"
        )
    got = raw if isinstance(raw, str) else raw.decode()
    if got != keys.layout_value:
        return Finding(
            "fail",
            "layout",
            f"the data was written with {got!r}, these settings give {keys.layout_value!r}: "
            "set EXECUTUS_REDIS_SHARDS to the recorded partition count",
        )
    return Finding("ok", "layout", f"{got} ({len(keys.partitions())} index partition(s))")


def _active_runs(client: StateClient, settings: Settings) -> Finding:
    keys = settings.key_schema()
    try:
        active = count_active(client, keys)
    except redis.RedisError as exc:
        return Finding("warn", "runs", f"cannot read the run indexes of {keys.prefix}: {exc}")
    return Finding("ok", "runs", f"{active} active run(s) under prefix {settings.key_prefix!r}")


def celery_env_checks(settings: Settings, env: Mapping[str, str]) -> Iterator[Finding]:
    names = sorted(k for k in env if k.startswith("CELERY_"))
    if not names:
        yield Finding("ok", "env", "no CELERY_* overrides")
        return
    for key in CELERY_URL_OVERRIDES:
        if key in env and env[key] != settings.effective_broker_url:
            yield Finding("fail", "env", f"{key} is set and overrides EXECUTUS_BROKER_URL")
    yield Finding("warn", "env", "Celery reads these from the environment: " + ", ".join(names))
