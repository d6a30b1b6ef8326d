"""A loopback TCP proxy that a test can cut and restore: the network between a
worker and PostgreSQL or the broker, failing on demand.

    proxy = TcpProxy("127.0.0.1", 5432).start()   # clients connect to proxy.port
    proxy.cut()          # existing connections reset, new ones refused (reset at once)
    proxy.cut("hang")    # nothing forwarded, new connections accepted but never answered
    proxy.restore()      # traffic flows again (a hung connection carries on)

One thread, non-blocking sockets and a selector; good for the few connections
and modest traffic of a test.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

CutMode = Literal["reset", "hang"]
CHUNK = 65536
MAX_BUFFER = 4 * 1024 * 1024  # per direction: stop reading when the other side lags this far


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dead peer or a firewall would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Pair:
    client: socket.socket
    upstream: socket.socket
    to_upstream: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    connected: bool = False

    def sockets(self) -> tuple[socket.socket, socket.socket]:
        return self.client, self.upstream


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", listen_port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, _Pair] = {}
        self._masks: dict[socket.socket, int] = {}
        self._held: list[socket.socket] = []  # accepted while hanging
        self._lock = threading.Lock()
        self._mode: CutMode | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self.accepted = 0
        self.refused = 0
        self.bytes_forwarded = 0
        self.cut_at: float | None = None

    # -- control ------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    def start(self) -> TcpProxy:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread.start()
        return self

    def cut(self, mode: CutMode = "reset") -> None:
        """``reset``: every connection is reset and new ones are refused (a peer
        that is down). ``hang``: nothing is forwarded any more and new
        connections are accepted but never answered (a network partition)."""
        with self._lock:
            self._mode = mode
            self.cut_at = time.monotonic()
        self._wake()

    def restore(self) -> None:
        with self._lock:
            self._mode = None
            self.cut_at = None
        self._wake()

    def close(self) -> None:
        self._stopped.set()
        self._wake()
        self._thread.join(timeout=5)
        for sock in [*self._pairs, *self._held]:
            _reset(sock)
        self._pairs.clear()
        self._held.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
        self._selector.close()

    def connections(self) -> int:
        return len(self._pairs) // 2

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the loop -----------------------------------------------------------------
    def _loop(self) -> None:
        applied: CutMode | None = None
        while not self._stopped.is_set():
            mode = self._mode
            if mode != applied:
                self._apply(mode)
                applied = mode
            for key, events in self._selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._wake_r:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                elif sock is self._listener:
                    self._accept()
                elif sock in self._pairs:
                    self._service(sock, events)

    def _apply(self, mode: CutMode | None) -> None:
        if mode == "reset":
            for pair in {id(p): p for p in self._pairs.values()}.values():
                self._drop(pair)
            for sock in self._held:
                _reset(sock)
            self._held.clear()
        elif mode is None:
            held, self._held = self._held, []
            for sock in held:
                self._connect(sock)
        # "hang" and restore: the interest sets are recomputed below
        for pair in {id(p): p for p in self._pairs.values()}.values():
            self._update_interest(pair)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            mode = self._mode
            if mode == "reset":
                self.refused += 1
                _reset(sock)
            elif mode == "hang":
                self._held.append(sock)
            else:
                self._connect(sock)

    def _connect(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        client.setblocking(False)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = upstream.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.refused += 1
            _reset(client)
            upstream.close()
            return
        self.accepted += 1
        pair = _Pair(client, upstream, connected=err == 0)
        self._pairs[client] = pair
        self._pairs[upstream] = pair
        self._update_interest(pair)

    def _update_interest(self, pair: _Pair) -> None:
        flowing = self._mode is None
        for sock, outgoing, incoming in (
            (pair.client, pair.to_client, pair.to_upstream),
            (pair.upstream, pair.to_upstream, pair.to_client),
        ):
            events = 0
            if sock is pair.upstream and not pair.connected:
                events = selectors.EVENT_WRITE
            elif flowing:
                if len(incoming) < MAX_BUFFER:
                    events |= selectors.EVENT_READ
                if outgoing:
                    events |= selectors.EVENT_WRITE
            self._interest(sock, events)

    def _interest(self, sock: socket.socket, events: int) -> None:
        """Register, modify or unregister ``sock`` (selectors cannot hold an empty mask)."""
        current = self._masks.get(sock, 0)
        if events == current:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            if not events:
                self._selector.unregister(sock)
            elif not current:
                self._selector.register(sock, events)
            else:
                self._selector.modify(sock, events)
        if events:
            self._masks[sock] = events
        else:
            self._masks.pop(sock, None)

    def _service(self, sock: socket.socket, events: int) -> None:
        pair = self._pairs[sock]
        if sock is pair.upstream and not pair.connected:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.refused += 1
                self._drop(pair)
                return
            pair.connected = True
            self._update_interest(pair)
            return
        if self._mode is not None:
            return
        other = pair.upstream if sock is pair.client else pair.client
        inbox = pair.to_upstream if sock is pair.client else pair.to_client
        outbox = pair.to_client if sock is pair.client else pair.to_upstream
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(pair)
                return
            if data == b"":
                self._drop(pair)
                return
            if data:
                inbox.extend(data)
                self._flush(other, inbox)
        if events & selectors.EVENT_WRITE and outbox:
            self._flush(sock, outbox)
        if pair.client in self._pairs:
            self._update_interest(pair)

    def _flush(self, sock: socket.socket, buffer: bytearray) -> None:
        pair = self._pairs.get(sock)
        if pair is None or (sock is pair.upstream and not pair.connected):
            return
        try:
            sent = sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(pair)
            return
        self.bytes_forwarded += sent
        del buffer[:sent]

    def _drop(self, pair: _Pair) -> None:
        for sock in pair.sockets():
            self._pairs.pop(sock, None)
            self._interest(sock, 0)
            _reset(sock)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
