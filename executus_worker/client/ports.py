"""The client's small types: what ``submit`` reports, and the publisher port it sends through."""

from __future__ import annotations

from typing import Protocol

from executus_worker.core.models import RunRecord


class Publisher(Protocol):
    """Sends one ``executus.run`` message.

    The default, ``executus_worker.publish.CeleryPublisher``, writes the Celery protocol-2
    message straight onto the broker's queue list: no Celery app, connected on first use.
    """

    def publish(self, run_id: str, request_json: str, *, queue: str) -> None: ...

    def close(self) -> None: ...


class EnqueueResult:
    """What ``Client.submit`` did: the run, its queue, and whether this call created it."""

    __slots__ = ("created", "record")

    def __init__(self, record: RunRecord, *, created: bool) -> None:
        self.record = record
        self.created = created

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def queue(self) -> str:
        return self.record.queue
