"""Celery bootsteps that let our hooks see what Celery's signals do not.

``drain_step``: a worker-blueprint step whose ``close`` drains the runs. Every warm stop of a
worker goes through ``WorkController.stop`` -> ``Blueprint.stop``, which closes every step
*before* it stops the pool -- and stopping the pool is what waits for running tasks. That path
is shared by SIGTERM/SIGINT (the signal handler only sets ``state.should_stop``; the event loop
then raises ``WorkerShutdown``), by ``celery control shutdown`` and Flower's shutdown button
(the ``shutdown`` control command raises ``WorkerShutdown`` in the consumer, and no
``worker_shutting_down`` signal is sent for it), and by an unrecoverable consumer error. So the
drain hangs off ``close``, not off a signal. SIGTERM also drains from its signal handler, a
moment earlier; draining twice is harmless.

Steps are added per app (``app.steps``), so an app built in a test or a client has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import bootsteps


def drain_step(on_stop: Callable[[], None]) -> type[bootsteps.StartStopStep]:
    """A worker step that calls ``on_stop`` when Celery starts stopping the worker."""

    class DrainOnStop(bootsteps.StartStopStep):
        label = "executus drain"

        def close(self, parent: Any) -> None:
            # Runs in the MainProcess, before the pool is stopped and joined.
            on_stop()

    return DrainOnStop
