"""A loopback HTTP server that serves test media and misbehaves on request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


class MediaServer:
    """Serves ``files[path]``; special paths: /status/NNN, /slow (stalls),
    /trickle, /trickle-headers, /gzip, /endless (never-ending body without
    Content-Length); ``route(path, handler)`` adds any other behaviour. Each
    request's Host header is kept in ``hosts``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.routes: dict[str, Route] = {}
        self.hosts: list[str] = []
        self.requests = 0
        files = self.files
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                outer.hosts.append(self.headers.get("Host", ""))
                path = self.path.split("?")[0]
                if path in outer.routes:
                    try:
                        outer.routes[path](self)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if path.startswith("/status/"):
                    self.send_response(int(path.rsplit("/", 1)[1]))
                    self.end_headers()
                    return
                if path == "/slow":
                    time.sleep(3)
                    self.send_response(200)
                    self.end_headers()
                    return
                if path == "/trickle":
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(200):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if path == "/trickle-headers":
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        for i in range(90):
                            self.wfile.write(f"X-Slow-{i}: y\r\n".encode())
                            self.wfile.flush()
                            time.sleep(0.1)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if path == "/gzip":
                    import gzip

                    body = gzip.compress(files.get("/gzip-source", b""))
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if path == "/endless":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.end_headers()
                    try:
                        for _ in range(100_000):
                            self.wfile.write(b"\0" * 65536)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                body = files.get(path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.url(path)

    def route(self, path: str, handler: Route) -> str:
        """Answer GET ``path`` with ``handler(request_handler)``; returns its URL."""
        self.routes[path] = handler
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def http_get(url: str, basic_auth: str | None = None) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answers."""
    import base64
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url)
    if basic_auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(basic_auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
