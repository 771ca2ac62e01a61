"""``executus-worker agents``: which live worker serves which agent; the enqueue-time check's
override flag, shared by ``enqueue`` and ``schedules add``; the agents file checked before a
worker starts."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click

from executus_worker.cli.common import json_option, make_client
from executus_worker.cli.output import emit_json, when
from executus_worker.fleet.directory import Directory, WorkerAd
from executus_worker.settings import Settings

allow_unknown_agent_option = click.option(
    "--allow-unknown-agent",
    is_flag=True,
    help="Queue it even if no live worker serves the agent (e.g. while its workers deploy).",
)


@click.command()
@click.option("--workers", "by_worker", is_flag=True, help="One row per worker instead.")
@json_option
def agents(by_worker: bool, as_json: bool) -> None:
    """The agents live workers serve, and which workers serve each (advertised with a TTL)."""
    with make_client() as client:
        directory = client.agents()
    if as_json:
        emit_json(directory_document(directory))
        return
    if not directory.workers:
        click.echo("no live worker has advertised itself on this Redis and key prefix", err=True)
        return
    click.echo(workers_table(directory) if by_worker else agents_table(directory))
    for ad in directory.workers:
        if ad.error:
            click.echo(f"worker {ad.worker} serves no agents: {ad.error}", err=True)


def directory_document(directory: Directory) -> dict[str, Any]:
    return {
        "agents": {
            name: {
                "workers": [ad.worker for ad in ads],
                "queues": sorted({q for ad in ads for q in ad.queues}),
            }
            for name, ads in directory.agents().items()
        },
        "workers": [_worker_document(ad) for ad in directory.workers],
    }


def _worker_document(ad: WorkerAd) -> dict[str, Any]:
    return {
        "worker": ad.worker, "agents": list(ad.agents), "queues": list(ad.queues),
        "pid": ad.pid, "started_at": when(ad.started_at), "seen_at": when(ad.seen_at),
        "error": ad.error,
    }  # fmt: skip


def agents_table(directory: Directory) -> str:
    rows = [("AGENT", "QUEUES", "WORKERS")]
    for name, ads in directory.agents().items():
        queues = ",".join(sorted({q for ad in ads for q in ad.queues}))
        rows.append((name, queues, ", ".join(ad.worker for ad in ads)))
    return _table(rows)


def workers_table(directory: Directory) -> str:
    now = time.time()
    rows = [("WORKER", "PID", "QUEUES", "LAST SEEN", "AGENTS")]
    for ad in directory.workers:
        seen = f"{max(0.0, now - ad.seen_at):.0f}s ago" if ad.seen_at else "-"
        served = ", ".join(ad.agents) or "(none: see error)"
        rows.append((ad.worker, str(ad.pid), ",".join(ad.queues), seen, served))
    return _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def check_agents_file(settings: Settings) -> None:
    """Load the agents file as the worker will (tables validated, factories not imported):
    a bad file stops ``executus-worker worker`` before Celery starts, naming file and entry."""
    if settings.agents_file is None:
        return
    # The worker stack (models, the agent registry) only for the command that starts a worker.
    from executus_worker.core.agents import AgentRegistry  # noqa: PLC0415
    from executus_worker.models.declarative import declared_agents  # noqa: PLC0415

    AgentRegistry.with_builtins(
        agents_file=settings.agents_file, declared=declared_agents(settings)
    )
