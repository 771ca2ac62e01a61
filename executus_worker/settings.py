"""The one settings model, read from ``EXECUTUS_*`` environment variables.

Build it explicitly (``Settings()``) where a process starts and pass it down; nothing in the
package reads the environment at import time and there is no module-level instance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from executus_worker.checkpoint.keys import DEFAULT_CLUSTER_SHARDS, MAX_SHARDS, KeySchema
from executus_worker.redis_connect import (
    CLUSTER_SCHEMES,
    SENTINEL_SCHEME,
    is_cluster,
    is_sentinel,
    parse_cluster_url,
    parse_sentinel_url,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Run state (records, checkpoints, leases, indexes) lives in Redis, whatever the broker.
# sentinel: kombu's list of sentinels (redis_connect.py), with EXECUTUS_SENTINEL_MASTER.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+socket", SENTINEL_SCHEME})
# redis+cluster / rediss+cluster: a Redis Cluster, for run state only (Celery's Redis transport
# cannot use a cluster as its broker).
STATE_SCHEMES = REDIS_SCHEMES | CLUSTER_SCHEMES
# The broker carries only executus.run messages: Redis, or RabbitMQ over AMQP 0-9-1 (kombu's
# py-amqp transport; Celery's recommended production broker).
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


class ModelTier(BaseModel):
    """One named model tier: overrides of the flat ``model_*`` settings (unset fields keep
    them). Set as JSON, e.g. ``EXECUTUS_MODEL_TIERS='{"fast": {"model": "gpt-4o-mini"}}'``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, min_length=1)
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0, le=20)
    input_cost_per_mtok: float | None = Field(default=None, ge=0)
    output_cost_per_mtok: float | None = Field(default=None, ge=0)


class Settings(BaseSettings):
    # hide_input_in_errors: a rejected value may be a token or a URL with a password.
    model_config = SettingsConfigDict(
        env_prefix="EXECUTUS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = None  # defaults to redis_url; redis(s):// or amqp(s)://
    # RabbitMQ only: declare the queues as quorum queues (replicated, the durable choice on a
    # RabbitMQ cluster). A queue's type is fixed when it is first declared: switching an
    # existing deployment means new queue names (or deleting the old queues once drained).
    broker_quorum_queues: bool = False
    # Redis Sentinel (redis_connect.py): with a sentinel:// URL, the name of the master group
    # the sentinels watch; the broker's defaults to the run state's.
    sentinel_master: str | None = Field(default=None, min_length=1)
    broker_sentinel_master: str | None = Field(default=None, min_length=1)
    key_prefix: str = Field(default="executus", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # How many partitions the run indexes are split into (checkpoint/keys.py). Default: 0 on
    # one Redis (the names every earlier version wrote), 64 on a Redis Cluster (needs >= 1).
    # Fixed for a deployment: the data records it and a process whose setting differs refuses
    # to start.
    redis_shards: int | None = Field(default=None, ge=0, le=MAX_SHARDS)

    lease_ttl_s: float = Field(default=30.0, gt=0)
    # An owner starts no model call and no tool call unless its lease is certainly valid for
    # this much longer (measured from when its last renewal was sent); below it the run pauses
    # until a renewal succeeds. Default: a third of the lease. Must be under the lease TTL.
    lease_margin_s: float | None = Field(default=None, gt=0)
    # Socket timeout of the renewal round trip (one per process per lease_ttl_s / 3): short, so
    # a dead connection is noticed while the margin still holds. Default: ttl / 10, 0.25..2 s.
    renew_timeout_s: float | None = Field(default=None, gt=0)
    sweep_interval_s: float = Field(default=30.0, gt=0)
    # A queued run that no worker claimed within this time is re-published (lost message,
    # crash between ack and claim), then with backoff (2x, 4x, ...), and not while its broker
    # queue holds a backlog it may be waiting in (checkpoint/store.py has the rule).
    queued_timeout_s: float = Field(default=900.0, gt=0)
    max_recovery_attempts: int = Field(default=5, ge=1)
    # At least visibility_timeout_s (checked below): the record is what drops a late duplicate.
    result_ttl_s: int = Field(default=86_400, ge=1)
    throttle_ms: int = Field(default=0, ge=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    # A worker that cannot reach Redis or the broker this long after it starts exits with a
    # message naming the setting, rather than retrying for ever with growing sleeps.
    startup_timeout_s: float = Field(default=30.0, ge=0)

    # A Celery result backend URL (e.g. redis://host:6379/1) for senders that wait on
    # AsyncResult: each run's ending is stored there too (SUCCESS with the output, FAILURE with
    # the reason, REVOKED, RETRY while interrupted). Off by default: the run record is the
    # truth, and storing every result again costs a round trip per run.
    result_backend: str | None = None

    default_queue: str = "executus"
    tier_queues: dict[str, str] = Field(default_factory=dict)  # model_tier -> queue
    # Far above the longest run: crash recovery comes from our lease, not from redelivery.
    visibility_timeout_s: int = Field(default=4 * 3600, ge=60)

    # The critic (critic/watchdog.py) watches runs that have a runtime budget: the request's
    # metadata "executus.runtime_s", else the agent's runtime_s, else critic_runtime_s.
    # Past the budget (soft deadline) the policy decides; at critic_backstop_mul x the budget
    # the run is killed whatever the policy said. Policy: extend_once (one extension of
    # critic_extend_s, default half the budget, with the optional critic_nudge message; the
    # next stall is killed), kill_on_stall, or "module:factory" returning a policy.
    critic_enabled: bool = True
    critic_runtime_s: float | None = Field(default=None, gt=0)
    critic_backstop_mul: float = Field(default=2.0, gt=1)
    critic_policy: str = Field(default="extend_once", min_length=1)
    critic_extend_s: float | None = Field(default=None, gt=0)
    critic_nudge: str | None = None
    critic_tick_s: float = Field(default=1.0, gt=0)

    # Batteries (batteries/, wired in worker/wiring.py). Audit: every run event to a bounded
    # stream per run (trimmed to about audit_stream_maxlen entries, expiring audit_stream_ttl_s
    # after its last event; default result_ttl_s) -- what `executus-worker events` reads.
    audit_stream: bool = True
    audit_stream_maxlen: int = Field(default=1000, ge=10)
    audit_stream_ttl_s: int | None = Field(default=None, ge=1)
    # How long the background writer lets events gather before one round trip writes them:
    # longer means fewer, larger writes (a no-op run's four events cost a round trip each at
    # 1 ms); readers see an event at most this much later.
    audit_linger_ms: float = Field(default=20.0, ge=0, le=1000)
    # Budget: tokens and cost per run across its attempts and per guild per UTC day, counted in
    # Redis. Per-run limits apply to every run (a request's metadata "executus.max_tokens" /
    # "executus.max_cost_usd" can only lower them); daily limits per guild id, "*" for every
    # guild without its own. Only runs some limit applies to are counted, unless
    # budget_track_all (one round trip per model step).
    budget_run_max_tokens: int | None = Field(default=None, ge=1)
    budget_run_max_cost_usd: float | None = Field(default=None, gt=0)
    budget_guild_daily_tokens: dict[str, int] = Field(default_factory=dict)
    budget_guild_daily_cost_usd: dict[str, float] = Field(default_factory=dict)
    budget_track_all: bool = False
    # Persona: system prompts per agent with per-guild overrides (batteries/persona.py).
    # Skills: shared tools offered to every agent or to those that name them (worker/skills.py).
    persona_file: Path | None = None
    skills_file: Path | None = None

    schedule_file: Path | None = None
    # How long a beat's enqueue of a scheduled fire may take before other beats assume that
    # beat died and retry the fire (idempotent, so a slow one taken over costs nothing).
    beat_enqueue_timeout_s: float = Field(default=30.0, gt=0)
    agents_file: Path | None = None

    # The model endpoint (any OpenAI-compatible chat-completions API) of the default tier;
    # model_tiers names more tiers, each overriding some of these. The API key is never a
    # setting (settings get printed and copied): it is read, when a model is built, from the
    # environment variable *named* by model_api_key_env.
    model_name: str | None = Field(default=None, min_length=1)
    model_base_url: str | None = None  # None: the SDK's default (api.openai.com)
    model_api_key_env: str = Field(default="OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    model_timeout_s: float = Field(default=60.0, gt=0)
    # Retries of one model call on 429, 5xx, timeouts and dropped connections, with backoff.
    model_max_retries: int = Field(default=3, ge=0, le=20)
    model_input_cost_per_mtok: float = Field(default=0.0, ge=0)  # USD per million tokens
    model_output_cost_per_mtok: float = Field(default=0.0, ge=0)
    model_tiers: dict[str, ModelTier] = Field(default_factory=dict)
    # A tool call still running after this becomes a tool error the model sees.
    tool_timeout_s: float = Field(default=60.0, gt=0)

    # Workers advertise the agents they serve with this TTL (refreshed every quarter of it);
    # enqueueing an agent no live worker serves is refused unless the check is off here (a
    # pool scaled to zero) or the caller overrides it (a deploy in progress).
    worker_advert_ttl_s: float = Field(default=60.0, ge=1)
    check_agents_on_enqueue: bool = True

    # Operating it (ops/README.md). Metrics are off unless a port is set: several workers on
    # one host (dev, the demo, systemd instances) would otherwise fight over one port, and a
    # listening socket on every interface should be asked for, not found.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_addr: str = "0.0.0.0"  # noqa: S104 -- scraped from other hosts (Prometheus, KEDA)
    # prometheus_client's multiprocess directory; None: a fresh temporary one per worker.
    metrics_dir: Path | None = None
    # The main process rewrites this file every health_interval_s; `executus-worker health`
    # calls it stale after health_stale_s (a liveness probe that never touches the broker).
    health_file: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "executus-worker.health"
    )
    health_interval_s: float = Field(default=5.0, gt=0)
    health_stale_s: float = Field(default=30.0, gt=0)
    log_format: Literal["text", "json"] = "text"

    # The HTTP API (`executus-worker api`, executus_worker.api). Without a token it serves
    # anyone who can reach it, so it refuses to listen on a non-loopback address then. The
    # token is a SecretStr: settings get printed and copied, a secret must not ride along.
    api_host: str = Field(default="127.0.0.1", min_length=1)
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_token: SecretStr | None = None
    # Cap on any request body, checked before a byte is parsed (default: max_payload_bytes,
    # the largest run request a worker accepts), and on JSON nesting (json.loads recurses).
    api_max_body_bytes: int | None = Field(default=None, ge=1024)
    api_max_json_depth: int = Field(default=64, ge=4, le=512)
    # The live event stream of a run: how often it reads the run, the keep-alive comment a
    # proxy needs to keep an idle stream open, how long one stream may last (clients resume
    # with Last-Event-ID), and how many may be open at once.
    api_stream_poll_s: float = Field(default=0.5, gt=0, le=60)
    api_stream_heartbeat_s: float = Field(default=15.0, gt=0)
    api_stream_max_s: float = Field(default=3600.0, gt=0)
    api_max_streams: int = Field(default=256, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in STATE_SCHEMES:
            hint = " (run state needs Redis; RabbitMQ goes in EXECUTUS_BROKER_URL)"
            raise ValueError(
                f"unsupported Redis URL scheme {scheme!r}"
                + (hint if scheme in AMQP_SCHEMES else "")
                + f"; use one of {sorted(STATE_SCHEMES)}"
            )
        if scheme == SENTINEL_SCHEME:
            parse_sentinel_url(value)  # its ValueError names the part that is wrong
        if scheme in CLUSTER_SCHEMES:
            parse_cluster_url(value)
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if scheme in CLUSTER_SCHEMES:
            raise ValueError(
                "Celery cannot use a Redis Cluster as its broker: give EXECUTUS_BROKER_URL a "
                "plain Redis (redis://), Redis Sentinel (sentinel://) or RabbitMQ (amqp://)"
            )
        if scheme not in REDIS_SCHEMES | AMQP_SCHEMES:
            raise ValueError(
                f"unsupported broker URL scheme {scheme!r}; use Redis "
                f"({', '.join(sorted(REDIS_SCHEMES))}) or RabbitMQ (amqp, amqps, pyamqp)"
            )
        if scheme == SENTINEL_SCHEME:
            parse_sentinel_url(value)  # its ValueError names the part that is wrong
        return value

    @field_validator("api_token", mode="before")
    @classmethod
    def _token_strength(cls, value: object) -> object:
        # Compose files pass `${TOKEN:-}`: an empty value means "no token", not a token "".
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        secret = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(secret, str) and len(secret) < 16:
            # Never echo the value: only its length.
            raise ValueError(f"must be at least 16 characters (got {len(secret)})")
        return value

    @model_validator(mode="after")
    def _quorum_needs_rabbitmq(self) -> Settings:
        if self.broker_quorum_queues and not self.broker_is_amqp:
            raise ValueError(
                "EXECUTUS_BROKER_QUORUM_QUEUES=true needs a RabbitMQ broker "
                f"(EXECUTUS_BROKER_URL=amqp://...), not {urlsplit(self.effective_broker_url).scheme}://"
            )
        return self

    @model_validator(mode="after")
    def _sentinel_names_master(self) -> Settings:
        if is_sentinel(self.redis_url) and not self.sentinel_master:
            raise ValueError(
                "EXECUTUS_REDIS_URL is a sentinel:// URL: set EXECUTUS_SENTINEL_MASTER "
                "to the name of the master group the sentinels watch"
            )
        if is_sentinel(self.effective_broker_url) and not self.effective_broker_sentinel_master:
            raise ValueError(
                "EXECUTUS_BROKER_URL is a sentinel:// URL: set EXECUTUS_BROKER_SENTINEL_MASTER "
                "(or EXECUTUS_SENTINEL_MASTER) to the name of its master group"
            )
        return self

    @model_validator(mode="after")
    def _cluster_needs_broker_and_shards(self) -> Settings:
        if not is_cluster(self.redis_url):
            return self
        if self.broker_url is None:
            raise ValueError(
                "EXECUTUS_REDIS_URL is a Redis Cluster, which holds run state only: set "
                "EXECUTUS_BROKER_URL to the broker (a plain Redis, Redis Sentinel or RabbitMQ)"
            )
        if self.redis_shards == 0:
            raise ValueError(
                "EXECUTUS_REDIS_SHARDS=0 cannot work on a Redis Cluster (every script must "
                f"stay in one slot): leave it unset ({DEFAULT_CLUSTER_SHARDS}) or set 1.."
                f"{MAX_SHARDS}"
            )
        return self

    @model_validator(mode="after")
    def _margin_below_lease(self) -> Settings:
        if self.lease_margin_s is not None and self.lease_margin_s >= self.lease_ttl_s:
            raise ValueError(
                f"EXECUTUS_LEASE_MARGIN_S={self.lease_margin_s} must be below "
                f"EXECUTUS_LEASE_TTL_S={self.lease_ttl_s}"
            )
        return self

    @model_validator(mode="after")
    def _retention_outlives_redelivery(self) -> Settings:
        # kombu restores a crashed worker's unacked message visibility_timeout_s after it
        # was delivered. The run's retained record is what makes that late copy a no-op; once
        # the record has expired the copy registers the run afresh and executes it again.
        if self.result_ttl_s < self.visibility_timeout_s:
            raise ValueError(
                f"EXECUTUS_RESULT_TTL_S ({self.result_ttl_s}s) must be at least "
                f"EXECUTUS_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}s): the broker "
                "redelivers a crashed worker's message up to the visibility timeout later, "
                "and a finished run whose record has expired by then would run again"
            )
        return self

    @property
    def effective_lease_margin_s(self) -> float:
        return self.lease_margin_s if self.lease_margin_s is not None else self.lease_ttl_s / 3

    @property
    def effective_renew_timeout_s(self) -> float:
        if self.renew_timeout_s is not None:
            return self.renew_timeout_s
        return min(2.0, max(0.25, self.lease_ttl_s / 10))

    @field_validator("health_stale_s")
    @classmethod
    def _stale_after_a_missed_write(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("health_interval_s")  # declared, so validated, before
        if interval is not None and value <= interval:
            raise ValueError(
                f"must exceed EXECUTUS_HEALTH_INTERVAL_S ({interval:g}): a healthy worker "
                "would read as stale"
            )
        return value

    @field_validator("budget_guild_daily_tokens", "budget_guild_daily_cost_usd")
    @classmethod
    def _positive_limits(cls, table: dict[str, float]) -> dict[str, float]:
        bad = sorted(guild for guild, limit in table.items() if not limit > 0)
        if bad:
            raise ValueError(f"daily limits must be positive (guilds {bad})")
        return table

    @property
    def redis_is_cluster(self) -> bool:
        return is_cluster(self.redis_url)

    @property
    def effective_redis_shards(self) -> int:
        if self.redis_shards is not None:
            return self.redis_shards
        return DEFAULT_CLUSTER_SHARDS if self.redis_is_cluster else 0

    def key_schema(self) -> KeySchema:
        """The run-state key names for this prefix and partition count."""
        return KeySchema(self.key_prefix, self.effective_redis_shards)

    @property
    def effective_audit_stream_ttl_s(self) -> int:
        return self.audit_stream_ttl_s or self.result_ttl_s

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def broker_is_amqp(self) -> bool:
        """True for RabbitMQ (amqp://, amqps://, pyamqp://), False for a Redis broker."""
        return urlsplit(self.effective_broker_url).scheme in AMQP_SCHEMES

    @property
    def effective_api_max_body_bytes(self) -> int:
        return self.api_max_body_bytes or self.max_payload_bytes

    @property
    def effective_broker_sentinel_master(self) -> str | None:
        return self.broker_sentinel_master or self.sentinel_master

    def queue_for(self, model_tier: str | None) -> str:
        if model_tier is not None and model_tier in self.tier_queues:
            return self.tier_queues[model_tier]
        return self.default_queue


def redact_url(url: str) -> str:
    """A URL safe to log: the password (and a lone token user) replaced by ``***``."""
    if ";" in url:  # kombu's list of sentinels: each one may carry the password
        return ";".join(redact_url(part) for part in url.split(";"))
    if is_cluster(url):  # host1:port1,host2:port2: no single host for urlsplit to find
        scheme, _, rest = url.partition("://")
        credentials, at, hosts = rest.rpartition("@")
        if not at:
            return url
        user, colon, _ = credentials.partition(":")
        return f"{scheme}://{user}:***@{hosts}" if colon else f"{scheme}://***@{hosts}"
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    auth = f"{user}:***@" if parts.password is not None else "***@"
    return urlunsplit((parts.scheme, auth + host, parts.path, parts.query, parts.fragment))
