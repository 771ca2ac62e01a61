"""Cutting a stuck step short, the way Celery's soft time limit does it (prefork only).

billiard installs ``soft_timeout_sighandler`` for SIGUSR1 in every prefork child: the signal
raises ``SoftTimeLimitExceeded`` inside the running task, even out of a blocking call (the
system call fails with EINTR and Python runs the handler). The critic calls
:func:`interrupt_step` from its own thread at a run's hard backstop; ``pthread_kill`` aims the
signal at the run's thread itself, because a process-directed signal may land on another thread
and leave the blocked call blocked. The executor classifies an exception raised while a CRITIC
stop is pending as that stop: the run ends ``failed`` with ``critic_kill``, it is not a crash.

Threads and solo pools cannot be interrupted this way (the task is not on a prefork child's
main thread, or SIGUSR1 means something else there): their runs stop at the step boundary.
"""

from __future__ import annotations

import signal
import threading

from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler


def interrupt_step(thread_id: int) -> bool:
    """Raise SoftTimeLimitExceeded in ``thread_id`` if it is a prefork child's task thread."""
    if SIG_SOFT_TIMEOUT is None or thread_id != threading.main_thread().ident:
        return False
    if signal.getsignal(SIG_SOFT_TIMEOUT) is not soft_timeout_sighandler:
        return False
    signal.pthread_kill(thread_id, SIG_SOFT_TIMEOUT)
    return True
