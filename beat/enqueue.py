"""The default ``Enqueuer``: the public client's register-then-publish, idempotent on run id."""

from __future__ import annotations

from executus_worker.client import Client
from executus_worker.core.models import RunRequest


class ClientEnqueuer:
    """``Client.submit`` with the fire's run id: registers the run (status ``queued``) and
    publishes it only if this call created it, so a second beat or a retried tick sends
    nothing. True if this call created the run."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def enqueue(self, request: RunRequest, run_id: str) -> bool:
        return self._client.submit(request.model_copy(update={"run_id": run_id})).created

    def close(self) -> None:
        self._client.close()
