"""``executus-worker demo``: the whole story, live (the code is in ``executus_worker.demo``)."""

from __future__ import annotations

import sys

import click

from executus_worker.demo import run_demo


@click.command()
@click.option("--redis-url", default=None, help="Default: EXECUTUS_REDIS_URL, local, embedded.")
def demo(redis_url: str | None) -> None:
    """Interrupt two demo runs mid-flight, show their checkpoints, resume them exactly.

    Part 1 runs the kernel in-process; part 2 does it again with real worker processes.
    """
    sys.exit(run_demo(redis_url, sys.stdout, workers=True))
