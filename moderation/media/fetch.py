"""Fetch media bytes for an upload event.

Media URLs come from users, so every URL, and every redirect it leads to, is
checked by ``url_guard`` before a socket is opened: http(s) only, no credentials,
no loopback, private, link-local, metadata or other non-public address (unless
``MEDIA_ALLOWED_HOSTS`` allows it, or it is loopback in dev mode). Redirects are
followed here, at most ``MAX_REDIRECTS``, each hop checked again; the connection
goes to the very address that was checked (no second DNS lookup). Refusals raise
``MediaUrlRefused``: dead-lettered, never retried.

Downloads are streamed with connect/read timeouts and a hard byte limit that
counts decoded bytes, so a slow, trickling, endless or compressed-bomb server
cannot hold a worker or its memory: one hard deadline (``MEDIA_TOTAL_TIMEOUT_S``)
covers resolving, connecting, redirects, headers, retries and the whole download.
``file://`` URLs are accepted only in dev mode (``DEV_MODE=true``), for local
testing with ``moderation publish``, and never as a redirect target.
"""

from __future__ import annotations

import http.client
import os
import ssl
import stat
import time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from moderation.errors import MediaFetchError, MediaTooLarge, MediaUrlRefused
from moderation.media.transport import (
    DEFAULT_CA_CERTS,
    BodyDecoder,
    FetchDeadline,
    connection_to,
    tls_context,
)
from moderation.media.url_guard import Address, MediaUrlPolicy, Target, parse_media_url

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_RETRYABLE = {429, 500, 502, 503, 504}
_REDIRECTS = {301, 302, 303, 307, 308}
_HEADERS = {
    "User-Agent": "moderation-worker/0.1",
    # Images are compressed already; a server that compresses anyway is decoded within the limit.
    "Accept-Encoding": "identity",
    "Connection": "close",
}


class _Retryable(Exception):
    pass


class MediaFetcher:
    def __init__(
        self,
        max_bytes: int,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        allow_files: bool = False,
        retries: int = 2,
        retry_backoff_s: float = 0.5,
        total_timeout_s: float | None = None,
        allowed_hosts: str = "",
        allow_loopback: bool = False,
        ca_certs: str | None = DEFAULT_CA_CERTS,
    ) -> None:
        """``allowed_hosts``: MEDIA_ALLOWED_HOSTS (a malformed entry raises ConfigError);
        ``allow_files`` and ``allow_loopback``: dev mode; ``ca_certs``: CA bundle for https."""
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.max_bytes = max_bytes
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.total_timeout_s = total_timeout_s or connect_timeout_s + 2 * read_timeout_s
        self.allow_files = allow_files
        self.policy = MediaUrlPolicy(allowed_hosts, allow_loopback)
        self._tls = tls_context(ca_certs)

    def fetch(self, url: str) -> bytes:
        """The media bytes. Raises MediaUrlRefused, MediaTooLarge or MediaFetchError."""
        if urlsplit(url).scheme.lower() == "file":
            if not self.allow_files:
                raise MediaUrlRefused("file:// media URLs are only accepted with DEV_MODE=true")
            return self._fetch_file(url)
        return self._fetch_http(url)

    def _fetch_file(self, url: str) -> bytes:
        """A regular file's bytes, read through the limit: at most max_bytes + 1
        are ever read, whatever size the file reports (files in /proc report 0,
        and a file may grow while it is read). FIFOs, devices, sockets and
        folders are refused without reading (a FIFO or /dev/zero never ends)."""
        path = Path(unquote(urlsplit(url).path))
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise MediaFetchError(f"cannot read {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise MediaFetchError(f"cannot read {path}: {_file_kind(info.st_mode)}, not a regular file")
            if info.st_size > self.max_bytes:
                raise MediaTooLarge(f"file is {info.st_size} bytes, over the limit of {self.max_bytes}")
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb", closefd=True) as fh:
                fd = -1
                body = fh.read(self.max_bytes + 1)
        except OSError as exc:
            raise MediaFetchError(f"cannot read {path}: {exc.strerror}") from None
        finally:
            if fd >= 0:
                os.close(fd)
        if len(body) > self.max_bytes:
            raise MediaTooLarge(f"file is over the limit of {self.max_bytes} bytes")
        return body

    def _fetch_http(self, url: str) -> bytes:
        # An overloaded media host (429/5xx) gets a few quick retries; after that the
        # event is dead-lettered with the last status so it can be replayed later.
        # One deadline covers all attempts.
        with FetchDeadline(self.total_timeout_s) as deadline:
            try:
                for attempt in range(self.retries + 1):
                    try:
                        return self._follow(url, deadline)
                    except _Retryable as exc:
                        pause = self.retry_backoff_s * (2**attempt)
                        if attempt == self.retries or pause >= deadline.remaining():
                            raise MediaFetchError(f"{exc} after {attempt + 1} attempts") from None
                        time.sleep(pause)
            except (MediaTooLarge, MediaUrlRefused):
                raise
            except MediaFetchError:
                if deadline.expired.is_set() or deadline.remaining() <= 0:
                    raise MediaFetchError(f"media download took over {self.total_timeout_s:g} s") from None
                raise
        raise AssertionError("unreachable")

    def _follow(self, url: str, deadline: FetchDeadline) -> bytes:
        """GET ``url``, following redirects; every hop is checked before connecting."""
        for hop in range(MAX_REDIRECTS + 1):
            try:
                target = parse_media_url(url)
                addresses = self.policy.resolve(target)
            except MediaUrlRefused as exc:
                where = "media URL" if hop == 0 else f"redirect {hop} (to {_origin(url)})"
                raise MediaUrlRefused(f"{where} refused: {exc}") from None
            result = self._get(target, addresses, deadline)
            if isinstance(result, bytes):
                return result
            url = urljoin(url, result)
        raise MediaFetchError(f"media URL redirected more than {MAX_REDIRECTS} times")

    def _get(self, target: Target, addresses: list[Address], deadline: FetchDeadline) -> bytes | str:
        """One request: the body, or the Location of a redirect."""
        conn = self._connect(target, addresses, deadline)
        try:
            # http.client applies ``timeout`` only when it connects: the socket it
            # made is still on the connect timeout, so set the read timeout on it.
            conn.timeout = _within(self.read_timeout_s, deadline)
            if conn.sock is not None:
                conn.sock.settimeout(conn.timeout)
            conn.request("GET", target.request_target, headers=_HEADERS)
            resp = conn.getresponse()
            if resp.status in _REDIRECTS:
                location = resp.getheader("Location")
                if not location:
                    raise MediaFetchError(f"media URL answered HTTP {resp.status} without a Location")
                return location
            if resp.status in _RETRYABLE:
                raise _Retryable(f"media URL answered HTTP {resp.status}")
            if resp.status != 200:
                raise MediaFetchError(f"media URL answered HTTP {resp.status}")
            return self._read_body(resp, deadline)
        except TimeoutError:
            raise MediaFetchError("media URL timed out") from None
        except http.client.IncompleteRead:
            raise MediaFetchError("media download ended before the end of the body") from None
        except http.client.LineTooLong:
            raise MediaFetchError("media server sent an over-long status or header line") from None
        except http.client.HTTPException as exc:
            detail = " ".join(str(exc).split())[:100] or type(exc).__name__
            raise MediaFetchError(f"media server sent a malformed response: {detail}") from None
        except OSError as exc:
            raise MediaFetchError(f"media download failed: {type(exc).__name__}") from None
        finally:
            conn.close()

    def _connect(
        self, target: Target, addresses: list[Address], deadline: FetchDeadline
    ) -> http.client.HTTPConnection:
        """A connection to the first of the checked ``addresses`` that answers."""
        error: OSError | None = None
        for address in addresses:
            timeout = _within(self.connect_timeout_s, deadline)
            conn = connection_to(target, address, deadline, timeout, self._tls)
            try:
                conn.connect()
                return conn
            except OSError as exc:
                conn.close()
                error = exc
        if isinstance(error, TimeoutError):
            raise MediaFetchError("media URL timed out")
        if isinstance(error, ssl.SSLError):
            raise MediaFetchError(f"TLS with the media host failed: {error.reason or error}")
        raise MediaFetchError(f"media URL unreachable: {type(error).__name__}")

    def _read_body(self, resp: http.client.HTTPResponse, deadline: FetchDeadline) -> bytes:
        if resp.length is not None and resp.length > self.max_bytes:
            raise MediaTooLarge(f"Content-Length {resp.length} is over the limit of {self.max_bytes} bytes")
        declared = resp.length
        decoder = BodyDecoder(resp.getheader("Content-Encoding") or "", self.max_bytes)
        body = bytearray()
        while True:
            # read1 returns whatever one socket read brings, so a server that
            # trickles a byte at a time still meets the deadline check.
            chunk = resp.read1(_CHUNK)
            if deadline.expired.is_set() or deadline.remaining() <= 0:
                raise MediaFetchError(f"media download took over {self.total_timeout_s:g} s")
            if not chunk:
                break
            body += decoder.decode(chunk)
        if resp.length:  # the connection ended before the announced length
            sent = (declared or 0) - resp.length
            raise MediaFetchError(
                f"media server sent {sent} of the {declared} bytes its Content-Length announced"
            )
        body += decoder.finish()
        return bytes(body)


def _file_kind(mode: int) -> str:
    kinds = [
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _within(timeout: float, deadline: FetchDeadline) -> float:
    return max(min(timeout, deadline.remaining()), 0.001)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL, for messages: paths and queries may carry tokens."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "a malformed URL"
