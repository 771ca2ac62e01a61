"""``executus-worker health``: is this host's worker alive? Reads the heartbeat file only.

No broker or Redis round trip, on purpose: it runs as a Kubernetes liveness probe every few
seconds on every pod, and a Redis outage must not get every worker restarted. Exit 0 when the
main process wrote the file within ``EXECUTUS_HEALTH_STALE_S``, 1 otherwise (missing, stale,
its pid gone, or -- with ``--ready`` -- still starting or draining).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from executus_worker.cli.common import json_option, load_settings
from executus_worker.cli.output import emit_json
from executus_worker.observability.health import check


@click.command()
@click.option(
    "--ready",
    is_flag=True,
    help="Also require the worker to be connected and consuming (a readiness probe).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Heartbeat file. Default: EXECUTUS_HEALTH_FILE.",
)
@json_option
def health(ready: bool, path: Path | None, as_json: bool) -> None:
    """Liveness probe: exit 0 if the worker's main process is alive (no broker round trip)."""
    settings = load_settings()
    report = check(
        path or settings.health_file, stale_s=settings.health_stale_s, require_ready=ready
    )
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(f"{'healthy' if report.healthy else 'unhealthy'}: {report.detail}")
    sys.exit(0 if report.healthy else 1)
