"""At worker boot: take back at once the runs whose owners are provably dead.

A worker SIGKILLed (or OOM-killed) and restarted on the same host would otherwise leave its
runs waiting for their leases to expire (``EXECUTUS_LEASE_TTL_S``) plus a sweep. Before its
first sweep, a booting worker walks the running runs once and drops the lease of every one
whose owner ``worker.identity.provably_dead`` -- same kernel, same pid namespace, pid gone or
reused; the sweep that follows requeues them like any run whose lease lapsed (the attempt
counts as a crash: its process did die). Owners it cannot judge keep their leases.

The walk reads three fields per running run in pipelined pages: it runs once per boot, not
per sweep, so its cost is not on any steady-state path.
"""

from __future__ import annotations

import logging

from executus_worker.checkpoint.store import RunStore
from executus_worker.worker.identity import provably_dead

log = logging.getLogger(__name__)


def release_dead_owners(store: RunStore, *, batch: int = 1000) -> int:
    """Drop the leases of provably dead local owners; returns how many runs were freed."""
    freed, cursor = 0, 0
    while True:
        leases, cursor = store.running_leases(cursor=cursor, batch=batch)
        for lease in leases:
            if provably_dead(lease.owner) and store.release_lease(
                lease.run_id, fence_token=lease.fence_token
            ):
                freed += 1
                log.warning(
                    "run %s: its owner %s is gone (process no longer exists); recovering it now",
                    lease.run_id, lease.owner,
                )  # fmt: skip
        if cursor == 0:
            return freed
