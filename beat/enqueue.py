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
        # A fire is never refused for want of a live worker: its agent was checked when the
        # job was added, and a fire during a deploy must still create its run (it waits queued).
        request = request.model_copy(update={"run_id": run_id})
        return self._client.submit(request, allow_unknown_agent=True).created

    def close(self) -> None:
        self._client.close()
