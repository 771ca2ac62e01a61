"""What the worker, recovery and the client share about the broker: its kind and its queues.

Run state always lives in Redis; the broker only carries ``executus.run`` messages. Two kinds
are supported: Redis (the default, the same server as run state or another) and RabbitMQ over
AMQP 0-9-1. Every process that declares a queue must declare it the same way (RabbitMQ refuses
a redeclaration with other arguments), so the declaration is built here and nowhere else.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

QUORUM_ARGUMENTS = {"x-queue-type": "quorum"}


def run_queue(name: str, *, quorum: bool = False) -> Queue:
    """The queue ``name`` behind a direct exchange of the same name, as Celery declares it."""
    arguments: dict[str, Any] | None = dict(QUORUM_ARGUMENTS) if quorum else None
    return Queue(name, Exchange(name, "direct"), routing_key=name, queue_arguments=arguments)
