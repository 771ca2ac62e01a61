"""StopToken.request is called from signal handlers, on the thread that may be in check()."""

from __future__ import annotations

import os
import signal
from types import FrameType

import pytest

from executus_worker.core.stop import ShutdownRequested, StopReason, StopToken


def test_request_from_a_signal_handler_during_checks_never_deadlocks() -> None:
    drain = StopToken()
    run = StopToken(parents=[drain])
    fired = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        fired += 1
        drain.request(StopReason.SHUTDOWN, "warm shutdown")

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        for _ in range(200):
            os.kill(os.getpid(), signal.SIGUSR2)
            run.reason()  # the handler may interrupt this thread anywhere in here
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert fired == 200
    with pytest.raises(ShutdownRequested):
        run.check()
