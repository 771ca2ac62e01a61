"""RunHandle: the RunCheckpointer for one execution attempt (store, run id, epoch).

It remembers which messages are already stored and sends only the rest, so a save costs the
new messages, never the transcript. Saves are throttled to one per ``throttle_ms``; the
throttle never hides the last state, because ``force=True``, ``interrupt`` and the terminal
calls always write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import JsonValue

from executus_worker.checkpoint.store import RunStore
from executus_worker.core.models import Checkpoint, Message, RunInfo, RunStatus
from executus_worker.core.ports import Clock, SystemClock
from executus_worker.errors import StoreError

log = logging.getLogger(__name__)

DEFAULT_RESULT_TTL_S = 86_400


class RunHandle:
    """Implements ``core.ports.RunCheckpointer`` on a ``RunStore`` for one claimed attempt."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        epoch: int,
        *,
        throttle_ms: int = 0,
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        clock: Clock | None = None,
        first_claim: bool = False,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.epoch = epoch
        self._first_claim = first_claim
        self.throttle_ms = throttle_ms
        self.result_ttl_s = result_ttl_s
        self._clock = clock or SystemClock()
        # The stored transcript, as the Message objects we sent: lets a save tell an append
        # (the usual case, checked in O(1)) from a rewrite of the tail (phased resume).
        self._stored: list[Message] = []
        self._last_write: float | None = None

    @property
    def persisted_len(self) -> int:
        return len(self._stored)

    def load(self) -> Checkpoint | None:
        if self._first_claim:
            # The run's first claim: no attempt before it could have saved anything, so skip
            # the round trip (measured ~0.2 ms of a ~1 ms per-run overhead in bench/dispatch).
            self._stored = []
            return None
        checkpoint = self.store.load_checkpoint(self.run_id)
        # A resumed attempt starts from what is stored: the transcript if a checkpoint exists,
        # nothing otherwise (a run that never saved has no messages to keep).
        self._stored = list(checkpoint.messages) if checkpoint is not None else []
        return checkpoint

    def save(self, checkpoint: Checkpoint, *, force: bool = False) -> bool:
        """Write unless throttled. A failed write (StoreError) is logged and retried at the
        next step; a forced write re-raises it. OwnershipLost always propagates."""
        now = self._clock.now()
        if not force and self._throttled(now):
            return False
        base_len, new = self._diff(checkpoint.messages)
        try:
            self.store.save_checkpoint(
                self.run_id,
                epoch=self.epoch,
                base_len=base_len,
                new_messages=new,
                checkpoint=checkpoint,
                now=now,
            )
        except StoreError as exc:
            if force:
                raise
            log.warning(
                "checkpoint save for run %s failed, retrying next step: %s", self.run_id, exc
            )
            return False
        self._stored_written(base_len, new)
        # Only a successful write moves the throttle window (a failed one retries next step).
        self._last_write = now
        return True

    def complete(self, checkpoint: Checkpoint, output: JsonValue) -> None:
        self._finish(checkpoint, RunStatus.COMPLETED, output=output, error=None)

    def fail(self, checkpoint: Checkpoint, error: str) -> None:
        self._finish(checkpoint, RunStatus.FAILED, output=None, error=error)

    def cancel(self, checkpoint: Checkpoint) -> None:
        self._finish(checkpoint, RunStatus.CANCELLED, output=None, error=None)

    def interrupt(self, checkpoint: Checkpoint) -> None:
        # Flush first, then release: the run must never be `interrupted` with a stale state.
        self.save(checkpoint, force=True)
        self.store.interrupt(self.run_id, epoch=self.epoch, now=self._clock.now())

    # ------------------------------------------------------------------------ internals

    def _throttled(self, now: float) -> bool:
        if self.throttle_ms <= 0 or self._last_write is None:
            return False
        return (now - self._last_write) * 1000 < self.throttle_ms

    def _diff(self, messages: Sequence[Message]) -> tuple[int, list[Message]]:
        """(base_len, new): keep the first base_len stored messages, then append ``new``."""
        stored = self._stored
        n, p = len(messages), len(stored)
        # Fast path: the last stored message is still in place, so the loop only appended.
        # The run loop appends to one list, so this is an identity check, not a comparison.
        if n >= p and (p == 0 or messages[p - 1] is stored[p - 1]):
            return p, list(messages[p:])
        # Slow path (after a phased resume truncated the transcript, or a rebuilt list):
        # keep the longest common prefix and rewrite everything after it.
        base = min(n, p)
        for i in range(base):
            a, b = messages[i], stored[i]
            if a is not b and a != b:
                base = i
                break
        return base, list(messages[base:])

    def _stored_written(self, base_len: int, new: Sequence[Message]) -> None:
        del self._stored[base_len:]
        self._stored.extend(new)

    def _finish(
        self, checkpoint: Checkpoint, status: RunStatus, *, output: JsonValue, error: str | None
    ) -> None:
        base_len, new = self._diff(checkpoint.messages)
        self.store.finish(
            self.run_id,
            epoch=self.epoch,
            status=status,
            output=output,
            error=error,
            base_len=base_len,
            new_messages=new,
            now=self._clock.now(),
            result_ttl_s=self.result_ttl_s,
        )
        self._stored_written(base_len, new)


class StoreCheckpointerFactory:
    """Implements ``core.ports.CheckpointerFactory``: one RunHandle per claimed attempt."""

    def __init__(
        self,
        store: RunStore,
        throttle_ms: int = 0,
        result_ttl_s: int = DEFAULT_RESULT_TTL_S,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.throttle_ms = throttle_ms
        self.result_ttl_s = result_ttl_s
        self.clock = clock or SystemClock()

    def begin(self, run: RunInfo) -> RunHandle | None:
        # Epoch 0 means the attempt never claimed the run (a non-durable run): nothing to fence
        # writes with, so nothing is written.
        if run.epoch <= 0:
            return None
        return RunHandle(
            self.store,
            run.run_id,
            run.epoch,
            throttle_ms=self.throttle_ms,
            result_ttl_s=self.result_ttl_s,
            clock=self.clock,
            # Epochs start at 1 and grow by one per claim: epoch 1 is the first attempt ever.
            first_claim=run.epoch == 1,
        )
