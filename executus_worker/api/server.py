"""Serving the API with uvicorn, and the rule that guards it: no token, loopback only."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from executus_worker.api.app import create_app
from executus_worker.errors import ConfigError
from executus_worker.settings import Settings, redact_url

log = logging.getLogger(__name__)

# Seconds open connections (event streams above all) get to finish at shutdown; clients
# resume a cut stream with Last-Event-ID.
SHUTDOWN_GRACE_S = 5


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches. A name other than ``localhost`` counts as
    public: what it resolves to is not ours to trust."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """ConfigError for a non-loopback address without a token (it would serve anyone)."""
    if settings.api_token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve the API on {host!r} without a token: anyone who reaches it "
            "could enqueue and cancel runs. Set EXECUTUS_API_TOKEN (16+ characters), or bind "
            "a loopback address (EXECUTUS_API_HOST=127.0.0.1)"
        )


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str = "info",
) -> None:
    """Run the API in the foreground until SIGINT/SIGTERM."""
    host = host if host is not None else settings.api_host
    port = port if port is not None else settings.api_port
    check_bind(settings, host)
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        # Forwarded headers are not trusted by default; a proxy in front is configured there.
        proxy_headers=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    log.warning(
        "executus API on %s:%d (redis %s, prefix %r, %s)",
        host,
        port,
        redact_url(settings.redis_url),
        settings.key_prefix,
        "bearer token required" if settings.api_token is not None else "NO TOKEN: loopback only",
    )
    uvicorn.Server(config).run()
