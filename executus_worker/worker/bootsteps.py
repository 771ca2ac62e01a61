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

``remote_control_step``: a consumer-blueprint step that gives this worker's remote-control
mailbox our own commands (``revoke``, see ``worker.revoke``). It replaces entries in this
worker's handler table only, never in Celery's process-global ``Panel`` registry, so another
app in the same process keeps Celery's commands.

Steps are added per app (``app.steps``), so an app built in a test or a client has none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import bootsteps

# Celery's remote-control bootstep (celery/worker/consumer/control.py), by blueprint name.
_CONTROL_STEP = "celery.worker.consumer.control.Control"

ControlCommand = Callable[..., Any]


def drain_step(on_stop: Callable[[], None]) -> type[bootsteps.StartStopStep]:
    """A worker step that calls ``on_stop`` when Celery starts stopping the worker."""

    class DrainOnStop(bootsteps.StartStopStep):
        label = "executus drain"

        def close(self, parent: Any) -> None:
            # Runs in the MainProcess, before the pool is stopped and joined.
            on_stop()

    return DrainOnStop


def remote_control_step(
    commands: Callable[[dict[str, ControlCommand]], dict[str, ControlCommand]],
) -> type[bootsteps.StartStopStep]:
    """A consumer step that rewrites this worker's control handlers once: ``commands``
    receives Celery's table and returns the entries to override."""

    class RemoteControl(bootsteps.StartStopStep):
        label = "executus remote control"
        requires = ("celery.worker.consumer.control:Control",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            # Once, at construction (the Control step is built by now: we require it); start()
            # runs again after every broker reconnect and must not wrap our wrapper.
            control = parent.blueprint.steps.get(_CONTROL_STEP)
            node = getattr(getattr(control, "box", None), "node", None)
            if node is not None:
                handlers = dict(node.handlers)
                handlers.update(commands(handlers))
                node.handlers = handlers

    return RemoteControl
