"""A private RabbitMQ vhost for one test session, on the RabbitMQ this machine runs.

RabbitMQ is a system service here (and on CI machines of this kind): tests do not start one.
Each session creates its own vhost (``rabbitmqctl`` as root, else the management API) and
deletes it at the end, so queues of concurrent sessions never meet and nothing is left behind.
The broker location: ``EXECUTUS_TEST_AMQP`` (host:port, user:password@host:port), default
guest:guest@127.0.0.1:5672.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from dataclasses import dataclass


class RabbitUnavailable(Exception):
    """No reachable RabbitMQ, or no way to manage a vhost on it."""


@dataclass(frozen=True)
class RabbitVhost:
    user: str
    password: str
    host: str
    port: int
    name: str

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"

    def create(self) -> None:
        _manage("add", self)

    def delete(self) -> None:
        _manage("delete", self)


def private_vhost() -> RabbitVhost:
    spec = os.environ.get("EXECUTUS_TEST_AMQP", "guest:guest@127.0.0.1:5672")
    auth, _, where = spec.rpartition("@")
    user, _, password = (auth or "guest:guest").partition(":")
    host, _, port = where.partition(":")
    name = f"executus-t-{uuid.uuid4().hex[:10]}"
    vhost = RabbitVhost(user, password, host, int(port or 5672), name)
    try:
        socket.create_connection((vhost.host, vhost.port), timeout=3).close()
    except OSError as exc:
        raise RabbitUnavailable(f"nothing listens on {vhost.host}:{vhost.port}: {exc}") from exc
    return vhost


def _manage(action: str, vhost: RabbitVhost) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is not None and os.geteuid() == 0 and vhost.host in {"127.0.0.1", "localhost"}:
        commands = [[ctl, "-q", f"{action}_vhost", vhost.name]]
        if action == "add":
            grant = [ctl, "-q", "set_permissions", "-p", vhost.name, vhost.user]
            commands.append(grant + [".*"] * 3)
        for argv in commands:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
            if done.returncode != 0:
                raise RabbitUnavailable(f"{' '.join(argv[1:])} failed: {done.stderr.strip()}")
        return
    _management_api(action, vhost)


def _management_api(action: str, vhost: RabbitVhost) -> None:
    base = f"http://{vhost.host}:15672/api"
    token = base64.b64encode(f"{vhost.user}:{vhost.password}".encode()).decode()
    name = urllib.request.quote(vhost.name, safe="")
    calls = [("PUT" if action == "add" else "DELETE", f"{base}/vhosts/{name}", None)]
    if action == "add":
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        calls.append(("PUT", f"{base}/permissions/{name}/{vhost.user}", perms))
    for method, url, body in calls:
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except OSError as exc:
            raise RabbitUnavailable(
                f"cannot {action} vhost {vhost.name}: no rabbitmqctl (as root) and the "
                f"management API at {base} failed: {exc}"
            ) from exc
