"""``executus-worker demo``: the whole story, live (the code is in ``executus_worker.demo``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from executus_worker.cli.common import stop_on_signals
from executus_worker.cli.live import Display, display_for
from executus_worker.demo import run_demo, run_story

TITLE = "executus demo: SIGTERM to A mid-run, SIGKILL to B; every run must still end exact"


@click.command()
@click.option("--redis-url", default=None, help="Default: EXECUTUS_REDIS_URL, local, embedded.")
@click.option(
    "--in-process", is_flag=True, help="Only the run kernel, in this process (about 1 s)."
)
@click.option(
    "--plain", is_flag=True, help="Plain progress lines even on a terminal (no live table)."
)
def demo(redis_url: str | None, in_process: bool, plain: bool) -> None:
    """Workers, beat and a cron job on one Redis; a deploy and a crash mid-run; every run
    checked exact and never executed by two owners at once. Exit 0 only if all held.

    Redis: --redis-url, else EXECUTUS_REDIS_URL, else 127.0.0.1:6379 if it answers, else a
    private redis-server started for the demo. Takes about 30 s; Ctrl-C stops everything.
    """
    if in_process:
        sys.exit(run_demo(redis_url, sys.stdout))

    @contextmanager
    def view(label: Callable[[str], str]) -> Iterator[Display]:
        live = False if plain else None
        with display_for(sys.stdout, label=label, title=TITLE, live=live) as display:
            yield display

    with stop_on_signals() as stop:
        sys.exit(run_story(redis_url, view, click.echo, stop))
