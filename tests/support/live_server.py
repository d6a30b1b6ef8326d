"""The app on a real waitress server (127.0.0.1, a free port, a pool of request
threads as ``moderation web`` runs it), in a thread, for concurrency tests."""

from __future__ import annotations

import base64
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class LiveServer:
    def __init__(self, app: Any, threads: int = 8) -> None:
        from waitress.server import create_server

        self.server: Any = create_server(app, host="127.0.0.1", port=0, threads=threads, ident="test")
        self.url = f"http://127.0.0.1:{self.server.effective_port}"
        self._thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)
        self._thread.start()

    def close(self) -> None:
        from waitress import wasyncore

        # Closed from the server's own loop (its trigger): the loop ends with an empty socket map.
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map, ignore_all=True))
        self._thread.join(10)
        self.server.task_dispatcher.shutdown()


@contextmanager
def live_server(app: Any, threads: int = 8) -> Iterator[LiveServer]:
    server = LiveServer(app, threads)
    try:
        yield server
    finally:
        server.close()


def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; redirects are not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(username: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}
