"""A hard deadline for an HTTP exchange made with ``requests``.

Socket timeouts restart on every byte, so a server that trickles its status
line, headers or body can hold a request for hours. This adapter tracks the
sockets each thread opens; ``hard_deadline`` arms a timer that shuts them down
when the time is up, which makes the blocked read fail at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


def _track(sock: Any) -> None:
    tracked = getattr(_local, "sockets", None)
    if tracked is not None and sock is not None:
        tracked.append(sock)


class _TrackedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)


class _TrackedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """Opens a fresh, tracked connection per request (no keep-alive reuse, so a
    socket shut down by a deadline is never handed to the next fetch)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        request.headers["Connection"] = "close"
        return super().send(request, *args, **kwargs)


@contextmanager
def hard_deadline(seconds: float) -> Iterator[threading.Event]:
    """Within the block, sockets this thread opens through a DeadlineAdapter are
    shut down after ``seconds``. The yielded event is set if that happened."""
    sockets: list[Any] = []
    fired = threading.Event()
    _local.sockets = sockets

    def expire() -> None:
        fired.set()
        for sock in list(sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(max(seconds, 0.0), expire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()
        _local.sockets = None
