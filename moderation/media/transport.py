"""Socket-level pieces of a media fetch that must hold against a hostile server.

- ``FetchDeadline``: one hard deadline for a whole fetch. Socket timeouts restart
  on every byte, so a server trickling its TLS handshake, headers or body could
  hold a worker for hours; when the time is up the deadline shuts down every
  socket the fetch opened, which makes any blocked read fail at once.
- ``connection_to``: an HTTP(S) connection to one checked address. The socket is
  connected to that address, never to a fresh DNS answer (DNS rebinding), while
  the Host header, TLS SNI and the certificate check use the URL's hostname.
- ``BodyDecoder``: undoes gzip/deflate Content-Encoding with a cap on the decoded
  bytes, so a small compression bomb never inflates past the media size limit.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import zlib
from types import TracebackType
from typing import Any

from moderation.errors import MediaFetchError, MediaTooLarge
from moderation.media.url_guard import Address, Target

try:  # the CA bundle requests used, so that behaviour does not change
    import certifi

    DEFAULT_CA_CERTS: str | None = certifi.where()
except ImportError:  # pragma: no cover - certifi comes with requests
    DEFAULT_CA_CERTS = None


class FetchDeadline:
    """Use as a context manager around a whole fetch; ``watch`` each new socket."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.expired = threading.Event()
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        # A duplicate descriptor of the same socket: shutting it down also stops the
        # TLS handshake, which detaches the original socket object while it runs.
        with self._lock:
            self._watched.append(sock.dup())
            if self.expired.is_set():
                self._shutdown_all()

    def _expire(self) -> None:
        with self._lock:
            self.expired.set()
            self._shutdown_all()

    def _shutdown_all(self) -> None:
        for sock in self._watched:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> FetchDeadline:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def tls_context(ca_certs: str | None = DEFAULT_CA_CERTS) -> ssl.SSLContext:
    """Certificates verified against ``ca_certs`` and the URL's hostname; TLS 1.2+."""
    return ssl.create_default_context(cafile=ca_certs)


def open_socket(address: Address, timeout: float) -> socket.socket:
    """A TCP connection to exactly ``address`` (no name lookup)."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(address.sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


class _Pinned:
    """Replaces http.client's ``socket.create_connection((host, port))``, which
    would resolve the name again, by a connection to the checked address."""

    def __init__(self, address: Address, deadline: FetchDeadline) -> None:
        self.address = address
        self.deadline = deadline

    def __call__(self, _host_port: Any, timeout: Any, _source: Any = None) -> socket.socket:
        if self.deadline.expired.is_set():
            raise TimeoutError("the fetch deadline has passed")
        sock = open_socket(self.address, timeout)
        self.deadline.watch(sock)
        return sock


def connection_to(
    target: Target,
    address: Address,
    deadline: FetchDeadline,
    timeout: float,
    tls: ssl.SSLContext,
) -> http.client.HTTPConnection:
    """An unconnected connection for ``target`` that will connect to ``address``;
    Host, SNI and the certificate check use ``target.host``. ``timeout`` applies
    to connecting; set ``conn.timeout`` again for reading."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    conn._create_connection = _Pinned(address, deadline)  # type: ignore[attr-defined]
    return conn


class BodyDecoder:
    """Decodes one response body (identity, gzip, x-gzip or deflate) into at most
    ``limit`` bytes in all; raises MediaTooLarge past that, MediaFetchError for
    other encodings (stacked ones included: we ask for identity anyway)."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        encoding = content_encoding.strip().lower()
        if encoding not in {"", "identity", "gzip", "x-gzip", "deflate"}:
            raise MediaFetchError(f"unsupported Content-Encoding {content_encoding[:40]!r}")
        self.limit = limit
        self.decoded = 0
        self._deflate = encoding == "deflate"
        self._z = self._new() if encoding not in {"", "identity"} else None

    def _new(self, raw: bool = False) -> Any:
        # 47: zlib or gzip header, detected; -15: raw deflate (some servers send it as "deflate").
        return zlib.decompressobj(-zlib.MAX_WBITS if raw else 32 + zlib.MAX_WBITS)

    def decode(self, data: bytes) -> bytes:
        if self._z is None:
            return self._count(data)
        out = b""
        try:
            while data:
                chunk = self._z.decompress(data, self.limit - self.decoded + 1)
                out += self._count(chunk)
                data = self._z.unused_data if self._z.eof else b""
                if data:  # the next gzip member
                    self._z = self._new()
        except zlib.error:
            if self._deflate and self.decoded == 0 and not out:
                self._deflate = False
                self._z = self._new(raw=True)
                return self.decode(data)
            raise MediaFetchError("media body is not valid compressed data") from None
        return out

    def finish(self) -> bytes:
        """What the decompressor still holds at the end of the body."""
        if self._z is None:
            return b""
        try:
            return self._count(self._z.flush(self.limit - self.decoded + 1))
        except zlib.error:
            raise MediaFetchError("media body is not valid compressed data") from None

    def _count(self, chunk: bytes) -> bytes:
        self.decoded += len(chunk)
        if self.decoded > self.limit:
            decoded = " once decoded" if self._z is not None else ""
            raise MediaTooLarge(f"media is over the limit of {self.limit} bytes{decoded}")
        return chunk
