"""systemd's notify protocol (sd_notify(3)): one datagram to ``$NOTIFY_SOCKET``, no library.

Under ``Type=notify`` with ``WatchdogSec=`` (ops/systemd/executus-worker.service) the health
beacon's thread sends ``WATCHDOG=1`` with every heartbeat, ``READY=1`` once the worker consumes
and ``STOPPING=1`` when it drains, so systemd restarts a main process that stalled -- the same
liveness the heartbeat file gives Kubernetes. Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"WATCHDOG=1"``); False when not run by systemd or on failure."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket, written with a leading NUL
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify %s to %s failed: %s", state, address.lstrip("\0"), exc)
        return False
    return True
