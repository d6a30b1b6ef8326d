"""Fetch media bytes for an upload event.

http(s) URLs are streamed with connect/read timeouts and a hard byte limit, so a
slow, trickling or endless server cannot hold a worker or its memory: one hard
deadline (``MEDIA_TOTAL_TIMEOUT_S``) covers connecting, redirects, headers,
retries and the whole download. ``file://`` URLs are accepted only in dev mode
(``DEV_MODE=true``), for local testing with ``moderation publish``.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
import urllib3

from moderation.errors import MediaFetchError, MediaTooLarge
from moderation.media.deadline import DeadlineAdapter, hard_deadline

_CHUNK = 64 * 1024
_RETRYABLE = {429, 500, 502, 503, 504}


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
    ) -> None:
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self.max_bytes = max_bytes
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.total_timeout_s = total_timeout_s or connect_timeout_s + 2 * read_timeout_s
        self.allow_files = allow_files
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "moderation-worker/0.1"
        # Images are compressed already; asking for identity avoids gzip bombs.
        self._session.headers["Accept-Encoding"] = "identity"
        adapter = DeadlineAdapter()
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def fetch(self, url: str) -> bytes:
        scheme = urlparse(url).scheme.lower()
        if scheme in {"http", "https"}:
            return self._fetch_http(url)
        if scheme == "file":
            if not self.allow_files:
                raise MediaFetchError("file:// media URLs are only accepted with DEV_MODE=true")
            return self._fetch_file(url)
        raise MediaFetchError(f"unsupported media URL scheme {scheme!r}; use http or https")

    def _fetch_file(self, url: str) -> bytes:
        path = Path(unquote(urlparse(url).path))
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                raise MediaTooLarge(f"file is {size} bytes, over the limit of {self.max_bytes}")
            return path.read_bytes()
        except OSError as exc:
            raise MediaFetchError(f"cannot read {path}: {exc.strerror}") from None

    def _fetch_http(self, url: str) -> bytes:
        # An overloaded media host (429/5xx) gets a few quick retries; after that the
        # event is dead-lettered with the last status so it can be replayed later.
        # One deadline covers all attempts.
        deadline = time.monotonic() + self.total_timeout_s
        with hard_deadline(self.total_timeout_s) as expired:
            try:
                for attempt in range(self.retries + 1):
                    try:
                        return self._fetch_http_once(url, deadline)
                    except _Retryable as exc:
                        pause = self.retry_backoff_s * (2**attempt)
                        if attempt == self.retries or time.monotonic() + pause >= deadline:
                            raise MediaFetchError(f"{exc} after {attempt + 1} attempts") from None
                        time.sleep(pause)
            except MediaFetchError:
                if expired.is_set():
                    raise MediaFetchError(f"media download took over {self.total_timeout_s:g} s") from None
                raise
        raise AssertionError("unreachable")

    def _fetch_http_once(self, url: str, deadline: float) -> bytes:
        try:
            with self._session.get(url, stream=True, timeout=self.timeout, allow_redirects=True) as resp:
                if resp.status_code in _RETRYABLE:
                    raise _Retryable(f"media URL answered HTTP {resp.status_code}")
                if resp.status_code != 200:
                    raise MediaFetchError(f"media URL answered HTTP {resp.status_code}")
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise MediaTooLarge(
                        f"Content-Length {declared} is over the limit of {self.max_bytes} bytes"
                    )
                chunks: list[bytes] = []
                total = 0
                while True:
                    # read1 returns whatever one socket read brings, so a server that
                    # trickles a byte at a time still meets the deadline check.
                    chunk = resp.raw.read1(_CHUNK, decode_content=True)
                    if not chunk:
                        if time.monotonic() > deadline:  # cut off by the hard deadline
                            raise MediaFetchError(f"media download took over {self.total_timeout_s:g} s")
                        return b"".join(chunks)
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise MediaTooLarge(f"media is over the limit of {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise MediaFetchError(f"media download took over {self.total_timeout_s:g} s")
                    chunks.append(chunk)
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise MediaFetchError("media URL timed out") from None
        except requests.ConnectionError as exc:
            raise MediaFetchError(f"media URL unreachable: {type(exc).__name__}") from None
        except requests.RequestException as exc:
            raise MediaFetchError(f"media fetch failed: {exc}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise MediaFetchError(f"media download failed: {type(exc).__name__}") from None
