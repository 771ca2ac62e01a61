"""``executus-worker api``: the HTTP API (executus_worker.api) in the foreground."""

from __future__ import annotations

import click

from executus_worker.cli.common import load_settings


@click.command()
@click.option("--host", default=None, help="Address to listen on [EXECUTUS_API_HOST, 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="[EXECUTUS_API_PORT, 8080]"
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def api(host: str | None, port: int | None, log_level: str) -> None:
    """Serve the HTTP API: enqueue, status, transcript, cancel, live events (SSE).

    Requests need `Authorization: Bearer $EXECUTUS_API_TOKEN`; without a token the API only
    listens on a loopback address. The OpenAPI document is at /openapi.json.
    """
    settings = load_settings()
    try:
        # The web stack only for this command (an optional extra of the package).
        from executus_worker.api import serve  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(
            f"the HTTP API needs its extra: pip install 'executus-worker[api]' ({exc})"
        ) from exc
    serve(settings, host=host, port=port, log_level=log_level)
