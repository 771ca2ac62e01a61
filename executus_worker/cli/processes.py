"""``worker`` and ``beat``, and the Celery command lines they (and ``dev``, ``demo``) run.

``worker`` and ``beat`` *exec* into Celery instead of running it as a child: the process the
supervisor (Docker, Kubernetes, systemd) started then *is* Celery's main process, so SIGTERM
reaches it directly and only it. A wrapper that forwards signals, or an init that signals the
whole process group, would hit prefork children mid-step.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from executus_worker.cli.agents import check_agents_file
from executus_worker.cli.common import load_settings
from executus_worker.settings import Settings

CELERY_APP = "executus_worker.worker"
BEAT_SCHEDULER = "beat.scheduler:ExecutusScheduler"
POOLS = ("prefork", "threads", "solo")


def all_queues(settings: Settings) -> list[str]:
    """The default queue plus every tier queue, in a stable order without duplicates."""
    queues = [settings.default_queue]
    for queue in sorted(set(settings.tier_queues.values())):
        if queue not in queues:
            queues.append(queue)
    return queues


def worker_argv(
    settings: Settings,
    *,
    pool: str | None = None,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
    extra: Sequence[str] = (),
) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", "--loglevel", loglevel]
    argv += ["--queues", ",".join(queues or all_queues(settings))]
    if pool is not None:
        argv += ["--pool", pool]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if hostname is not None:
        argv += ["--hostname", hostname]
    return argv + list(extra)


def beat_argv(*, loglevel: str = "INFO", extra: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat"]
    return [*argv, "--scheduler", BEAT_SCHEDULER, "--loglevel", loglevel, *extra]


def exec_celery(argv: Sequence[str]) -> None:
    """Replace this process with Celery (never returns on success)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], list(argv))  # noqa: S606 -- fixed argv, our own interpreter


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--pool", "-P", type=click.Choice(POOLS), default=None, help="Celery pool.")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None)
@click.option("--queues", "-Q", default=None, help="Comma-separated; default: all our queues.")
@click.option("--hostname", "-n", default=None)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    *,
    pool: str | None,
    concurrency: int | None,
    queues: str | None,
    hostname: str | None,
    loglevel: str,
    celery_args: tuple[str, ...],
) -> None:
    """Exec into `celery -A executus_worker.worker worker` (extra args pass through)."""
    settings = load_settings()
    check_agents_file(settings)  # a bad agents file: one message here, not a worker that fails
    # The same for the persona and skills files (the worker stack: only for this command).
    from executus_worker.worker.wiring import check_battery_files  # noqa: PLC0415

    check_battery_files(settings)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    exec_celery(worker_argv(
        settings, pool=pool, concurrency=concurrency, queues=queue_list,
        hostname=hostname, loglevel=loglevel, extra=celery_args,
    ))  # fmt: skip


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Exec into `celery beat` with the executus scheduler (cron jobs + recovery sweep)."""
    load_settings()  # fail here, readably, rather than inside Celery
    exec_celery(beat_argv(loglevel=loglevel, extra=celery_args))
