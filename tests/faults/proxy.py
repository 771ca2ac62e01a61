"""An in-process TCP proxy whose link the test breaks on purpose.

Modes, switchable at any time with ``set_mode``:

- ``pass``: bytes flow both ways.
- ``drop``: a partition. Connections stay open -- no FIN, no RST, new connections are
  accepted -- but every byte read in either direction is discarded, so each side just hears
  nothing. A connection that lost bytes this way is closed when the link returns to ``pass``:
  TCP would have retransmitted those bytes or failed the connection, never resumed a stream
  with a hole in it (a client would read half a reply).
- ``reset``: every connection is closed with an RST at once, and new ones are reset on
  accept, until the mode changes: what a restarting or failing-over endpoint looks like.
- ``mute``: requests reach the server, every reply is discarded: the command ran and its
  client cannot know (a partition that falls between a request and its reply). Like ``drop``,
  a stream that lost bytes is closed when the link returns to ``pass``.

One selector thread serves every connection. It is bounded -- at most ``max_connections``
pairs, at most ``_BUFFER_CAP`` bytes queued per direction (reading pauses above it) -- and it
stops itself after ``lifetime_s`` even if a test forgets to stop it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["pass", "drop", "reset", "mute"]
MODES: tuple[Mode, ...] = ("pass", "drop", "reset", "mute")

_BUFFER_CAP = 1 << 20
_CHUNK = 64 * 1024


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN (SO_LINGER 0), as a dying peer's kernel would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Pair:
    """A client connection and its upstream connection (None if opened during a partition)."""

    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.torn = upstream is None  # bytes were (or will be) lost: never resume this stream

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]


class TcpProxy:
    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        *,
        max_connections: int = 256,
        lifetime_s: float = 300.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.lifetime_s = lifetime_s
        self._mode: Mode = "pass"
        self._wanted: Mode = "pass"
        self._mode_applied = threading.Event()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._pairs: dict[socket.socket, _Pair] = {}
        self._interest: dict[socket.socket, int] = {}
        self.accepted = 0  # connections accepted over the proxy's life, for assertions
        self.port = 0

    # -- control (test thread) -------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def mode(self) -> Mode:
        return self._mode

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        # A daemon thread: whatever happens to the test, the proxy never holds up the exit.
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def set_mode(self, mode: Mode, timeout_s: float = 5.0) -> None:
        """Switch modes; returns once the proxy thread has applied the switch."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; expected one of {MODES}")
        self._mode_applied.clear()
        self._wanted = mode
        if not self._mode_applied.wait(timeout_s):
            raise RuntimeError(f"proxy did not switch to {mode!r} within {timeout_s}s")

    def connections(self) -> int:
        return len({id(p) for p in self._pairs.values()})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the proxy thread ------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        deadline = time.monotonic() + self.lifetime_s
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self._wanted != self._mode or not self._mode_applied.is_set():
                    self._apply_mode(selector)
                for key, mask in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if key.data is None:
                        self._accept(selector)
                    elif sock in self._interest:  # not closed earlier in this round
                        self._service(selector, key.data, sock, mask)
        finally:
            for pair in {id(p): p for p in self._pairs.values()}.values():
                self._close(selector, pair, reset=False)
            selector.close()
            self._listener.close()

    def _apply_mode(self, selector: selectors.BaseSelector) -> None:
        wanted = self._wanted
        pairs = list({id(p): p for p in self._pairs.values()}.values())
        if wanted == "reset":
            for pair in pairs:
                self._close(selector, pair, reset=True)
        elif wanted == "drop":
            for pair in pairs:
                if pair.to_upstream or pair.to_client:
                    pair.torn = True
                pair.to_upstream.clear()
                pair.to_client.clear()
                self._update(selector, pair)
        elif wanted == "mute":
            for pair in pairs:
                if pair.to_client:
                    pair.torn = True
                pair.to_client.clear()
                self._update(selector, pair)
        else:  # pass: streams that lost bytes cannot resume
            for pair in pairs:
                if pair.torn:
                    self._close(selector, pair, reset=True)
        self._mode = wanted
        self._mode_applied.set()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.accepted += 1
        if self._mode == "reset" or self.connections() >= self.max_connections:
            _reset(client)
            return
        upstream: socket.socket | None = None
        if self._mode in ("pass", "mute"):
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                _reset(client)  # the target is down: the client sees its connection fail
                return
            upstream.setblocking(False)
        client.setblocking(False)
        pair = _Pair(client, upstream)
        for sock in pair.sockets():
            self._pairs[sock] = pair
        self._update(selector, pair)

    def _service(
        self, selector: selectors.BaseSelector, pair: _Pair, sock: socket.socket, mask: int
    ) -> None:
        from_client = sock is pair.client
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(_CHUNK)
                if not data:
                    self._close(selector, pair, reset=False)
                    return
                # mute forwards requests only; a reply it eats tears the stream like drop.
                forward = self._mode == "pass" or (self._mode == "mute" and from_client)
                if forward and pair.upstream is not None and not pair.torn:
                    (pair.to_upstream if from_client else pair.to_client).extend(data)
                else:
                    pair.torn = True  # discarded: a partition eats these bytes
            if mask & selectors.EVENT_WRITE:
                buffer = pair.to_client if from_client else pair.to_upstream
                sent = sock.send(buffer)
                del buffer[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close(selector, pair, reset=True)
            return
        self._update(selector, pair)

    def _update(self, selector: selectors.BaseSelector, pair: _Pair) -> None:
        """Register each socket for what it can do now: read while the other direction has
        room, write while it has bytes queued."""
        plan = [(pair.client, pair.to_upstream, pair.to_client)]
        if pair.upstream is not None:
            plan.append((pair.upstream, pair.to_client, pair.to_upstream))
        for sock, outgoing, incoming in plan:
            events = 0
            if len(outgoing) < _BUFFER_CAP:
                events |= selectors.EVENT_READ
            if incoming:
                events |= selectors.EVENT_WRITE
            current = self._interest.get(sock)
            if current == events:
                continue
            if not events:  # both buffers full: wait for the peer to drain one
                if current is not None:
                    selector.unregister(sock)
                    del self._interest[sock]
                continue
            if current is None:
                selector.register(sock, events, pair)
            else:
                selector.modify(sock, events, pair)
            self._interest[sock] = events

    def _close(self, selector: selectors.BaseSelector, pair: _Pair, *, reset: bool) -> None:
        for sock in pair.sockets():
            if self._interest.pop(sock, None) is not None:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sock)
            self._pairs.pop(sock, None)
            if reset:
                _reset(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
