"""The client's small types: what ``submit`` reports, the publisher port, ``WaitTimeout``."""

from __future__ import annotations

from typing import Protocol

from executus_worker.core.models import RunRecord
from executus_worker.errors import ExecutusError


class Publisher(Protocol):
    """Sends one ``executus.run`` message.

    The default, ``executus_worker.broker_publish.CeleryPublisher``, writes the Celery
    protocol-2 message to the broker (Redis or RabbitMQ): no Celery app, connected on first use.
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


class WaitTimeout(ExecutusError, TimeoutError):
    """``Client.wait`` gave up before the run reached a terminal status.

    Also a builtin ``TimeoutError``, so generic timeout handling catches it. ``record`` is the
    last record seen. (Here, not in ``errors``, because it carries a ``RunRecord``: ``errors``
    must stay importable by ``core.models``.)
    """

    def __init__(self, run_id: str, timeout_s: float, record: RunRecord) -> None:
        super().__init__(f"run {run_id!r} still {record.status.value} after {timeout_s:g}s")
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.record = record
