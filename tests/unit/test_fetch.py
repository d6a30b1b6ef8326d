from __future__ import annotations

import functools
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import pytest

from moderation.errors import MediaFetchError, MediaTooLarge
from moderation.media.fetch import MediaFetcher


def fetcher(**kw) -> MediaFetcher:
    args = dict(
        max_bytes=10_000,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        retry_backoff_s=0.01,
        allowed_hosts="127.0.0.1",  # the test media server
    )
    args.update(kw)
    return MediaFetcher(**args)


def test_fetches_http_bytes(media_server):
    url = media_server.add("/ok.jpg", b"x" * 500)
    assert fetcher().fetch(url) == b"x" * 500


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/nope.jpg", MediaFetchError, "HTTP 404"),
        ("/status/403", MediaFetchError, "HTTP 403"),
        ("/status/503", MediaFetchError, "503 after 3 attempts"),
        ("/slow", MediaFetchError, "timed out"),
        ("/endless", MediaTooLarge, "over the limit"),
    ],
)
def test_http_failures(media_server, path, error, message):
    started = time.monotonic()
    with pytest.raises(error, match=message):
        fetcher().fetch(media_server.url(path))
    assert time.monotonic() - started < 10


def test_a_trickling_server_cannot_hold_the_worker(media_server):
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match="took over 1 s"):
        fetcher(total_timeout_s=1.0).fetch(media_server.url("/trickle"))
    assert time.monotonic() - started < 3


def test_a_server_trickling_its_headers_cannot_hold_the_worker(media_server):
    started = time.monotonic()
    with pytest.raises(MediaFetchError, match="took over 1 s"):
        fetcher(total_timeout_s=1.0).fetch(media_server.url("/trickle-headers"))
    assert time.monotonic() - started < 3


def test_compressed_responses_are_decoded(media_server):
    media_server.add("/gzip-source", b"\xff\xd8 image bytes")
    assert fetcher().fetch(media_server.url("/gzip")) == b"\xff\xd8 image bytes"


def test_declared_length_over_limit_is_refused_before_download(media_server):
    url = media_server.add("/big.jpg", b"x" * 20_000)
    with pytest.raises(MediaTooLarge, match="Content-Length 20000"):
        fetcher().fetch(url)


def test_unreachable_host():
    with pytest.raises(MediaFetchError, match="unreachable"):
        fetcher().fetch("http://127.0.0.1:9/x.jpg")


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x.jpg", "gopher://x", "data:image/png;base64,AAAA", "x.jpg"]
)
def test_other_schemes_are_refused(url):
    with pytest.raises(MediaFetchError, match="scheme"):
        fetcher().fetch(url)


def test_file_urls_only_in_dev_mode(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"local")
    with pytest.raises(MediaFetchError, match="DEV_MODE"):
        fetcher().fetch(path.as_uri())
    assert fetcher(allow_files=True).fetch(path.as_uri()) == b"local"
    with pytest.raises(MediaFetchError, match="cannot read"):
        fetcher(allow_files=True).fetch((tmp_path / "missing.jpg").as_uri())
    path.write_bytes(b"x" * 20_000)
    with pytest.raises(MediaTooLarge):
        fetcher(allow_files=True).fetch(path.as_uri())


def test_a_fifo_is_refused_without_waiting_for_or_reading_its_writer(tmp_path):
    """A FIFO reports size 0 and never ends while its writer writes (one fed
    300 MB was read whole): refused as not a regular file, and opening it does
    not wait for a writer either."""
    import os

    fifo = tmp_path / "feed.jpg"
    os.mkfifo(fifo)
    error, seconds, peak = measure(lambda: fetcher(allow_files=True).fetch(fifo.as_uri()))
    assert isinstance(error, MediaFetchError) and "a FIFO, not a regular file" in str(error)
    assert seconds < 5 and peak < 1_000_000


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_refused_without_reading_it(device):
    error, seconds, peak = measure(lambda: fetcher(allow_files=True).fetch(f"file://{device}"))
    assert isinstance(error, MediaFetchError) and "a character device, not a regular file" in str(error)
    assert seconds < 5 and peak < 1_000_000


def test_a_file_that_reports_size_zero_is_still_read_through_the_limit():
    """Files in /proc report size 0; at most MEDIA_MAX_BYTES + 1 bytes are read."""
    small = fetcher(allow_files=True, max_bytes=16)
    with pytest.raises(MediaTooLarge, match="over the limit of 16 bytes"):
        small.fetch("file:///proc/self/status")
    status = fetcher(allow_files=True, max_bytes=1_000_000).fetch("file:///proc/self/status")
    assert status.startswith(b"Name:")


def test_a_file_exactly_at_the_limit_is_read_whole(tmp_path):
    path = tmp_path / "exact.jpg"
    path.write_bytes(b"x" * 10_000)
    assert fetcher(allow_files=True).fetch(path.as_uri()) == b"x" * 10_000


# -- hostile servers: every one ends as a clear InvalidInput, in bounded time and memory --
Handler = Callable[[BaseHTTPRequestHandler], None]


def measure(fn: Callable[[], object]) -> tuple[BaseException | None, float, int]:
    """(error raised, seconds, peak bytes allocated by Python) of ``fn()``."""
    error: BaseException | None = None
    tracemalloc.start()
    started = time.monotonic()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        error = exc
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"\n{type(error).__name__}: {error} | {elapsed:.2f} s, peak {peak / 1e6:.2f} MB")
    return error, elapsed, peak


def answer(
    status_and_headers: bytes, body: Callable[[BaseHTTPRequestHandler], None] | bytes = b""
) -> Handler:
    """A raw response: the bytes given for status line and headers, then ``body``."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        request.wfile.write(status_and_headers)
        request.wfile.flush()
        if callable(body):
            body(request)
        else:
            request.wfile.write(body)
        request.close_connection = True

    return handle


def paced(piece: bytes, every_s: float, times: int = 100_000) -> Callable[[BaseHTTPRequestHandler], None]:
    def send(request: BaseHTTPRequestHandler) -> None:
        for _ in range(times):
            request.wfile.write(piece)
            request.wfile.flush()
            time.sleep(every_s)

    return send


@functools.cache
def bomb(wbits: int, size: int = 100 * 2**20) -> bytes:
    """``size`` zero bytes compressed (gzip: wbits 31; zlib/deflate: 15), about 1000:1."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = b"\0" * 2**20
    return b"".join(packer.compress(zeros) for _ in range(size // len(zeros))) + packer.flush()


def test_an_endless_body_is_cut_at_the_byte_limit(media_server):
    error, elapsed, peak = measure(lambda: fetcher(max_bytes=1_000_000).fetch(media_server.url("/endless")))
    assert isinstance(error, MediaTooLarge) and "over the limit of 1000000 bytes" in str(error)
    assert elapsed < 1 and peak < 4_000_000


def test_an_endless_body_is_cut_at_the_total_timeout(media_server):
    url = media_server.route("/paced", answer(b"HTTP/1.1 200 OK\r\n\r\n", paced(b"x" * 65536, 0.01)))
    error, elapsed, peak = measure(lambda: fetcher(max_bytes=10**9, total_timeout_s=1.0).fetch(url))
    assert isinstance(error, MediaFetchError) and str(error) == "media download took over 1 s"
    assert 1.0 <= elapsed < 1.5 and peak < 30_000_000


def test_reads_wait_for_the_read_timeout_not_the_connect_timeout(media_server):
    """http.client applies its timeout only when connecting: a body byte that
    takes longer than the connect timeout (but less than the read timeout)
    must still arrive."""
    url = media_server.route(
        "/slow-body", answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", paced(b"x", 1.2, times=2))
    )
    body = fetcher(connect_timeout_s=0.5, read_timeout_s=2.0, total_timeout_s=5.0).fetch(url)
    assert body == b"xx"


def test_a_slow_loris_body_is_cut_at_the_total_timeout(media_server):
    url = media_server.route(
        "/loris", answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", paced(b"x", 1.0))
    )
    # a byte a second never trips the read timeout (per socket read); the total does
    error, elapsed, _ = measure(lambda: fetcher(read_timeout_s=5.0, total_timeout_s=1.5).fetch(url))
    assert isinstance(error, MediaFetchError) and str(error) == "media download took over 1.5 s"
    assert 1.5 <= elapsed < 2.0


def test_a_slow_loris_tls_handshake_is_cut_at_the_total_timeout():
    # A TLS record header announcing 16 KiB, then a byte every 0.1 s: every socket read
    # gets data in time, only the hard deadline ends it.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            try:
                conn.sendall(b"\x16\x03\x03\x40\x00")
                for _ in range(100):
                    conn.sendall(b"\x00")
                    time.sleep(0.1)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        error, elapsed, _ = measure(
            lambda: fetcher(connect_timeout_s=5.0, total_timeout_s=1.0).fetch(
                f"https://127.0.0.1:{port}/a.jpg"
            )
        )
    finally:
        listener.close()
    assert isinstance(error, MediaFetchError) and str(error) == "media download took over 1 s"
    assert 1.0 <= elapsed < 1.5


def test_a_content_length_longer_than_the_body_is_an_error(media_server):
    url = media_server.route("/short", answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n", b"x" * 100))
    with pytest.raises(MediaFetchError, match="sent 100 of the 5000 bytes its Content-Length announced"):
        fetcher().fetch(url)


def test_a_content_length_shorter_than_the_body_is_all_that_is_read(media_server):
    url = media_server.route(
        "/long", answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", paced(b"y" * 65536, 0.001))
    )
    error, elapsed, _ = measure(lambda: fetcher().fetch(url))
    assert error is None and elapsed < 1
    assert fetcher().fetch(url) == b"y" * 100


@pytest.mark.parametrize("length", ["abc", "-1", "99999999999999999999999"])
def test_a_malformed_content_length_still_meets_the_byte_limit(media_server, length):
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()
    url = media_server.route("/bad-length", answer(head, paced(b"z" * 65536, 0.001)))
    with pytest.raises(MediaTooLarge):
        fetcher().fetch(url)


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
def test_compression_bombs_are_cut_at_the_decoded_byte_limit(media_server, encoding, wbits):
    payload = bomb(wbits)  # 100 MiB of zeros in about 100 KB
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\nContent-Length: {len(payload)}\r\n\r\n"
    url = media_server.route("/bomb", answer(head.encode(), payload))
    error, elapsed, peak = measure(lambda: fetcher(max_bytes=1_000_000).fetch(url))
    assert isinstance(error, MediaTooLarge)
    assert str(error) == "media is over the limit of 1000000 bytes once decoded"
    assert elapsed < 1 and peak < 5_000_000


def test_compressed_bodies_within_the_limit_are_decoded(media_server):
    for wbits, encoding in [(31, "gzip"), (15, "deflate"), (-15, "deflate")]:
        packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
        payload = packer.compress(b"\xff\xd8 image " * 500) + packer.flush()
        head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n\r\n".encode()
        url = media_server.route("/packed", answer(head, payload))
        assert fetcher().fetch(url) == b"\xff\xd8 image " * 500


@pytest.mark.parametrize("encoding", ["gzip, gzip", "br", "zstd", "compress"])
def test_other_or_stacked_encodings_are_refused(media_server, encoding):
    head = f"HTTP/1.1 200 OK\r\nContent-Encoding: {encoding}\r\n\r\n".encode()
    url = media_server.route("/enc", answer(head, bomb(31)))
    with pytest.raises(MediaFetchError, match="unsupported Content-Encoding"):
        fetcher().fetch(url)


def test_corrupt_compressed_data_is_an_error(media_server):
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n"
    url = media_server.route("/corrupt", answer(head, b"\x1f\x8b this is not gzip"))
    with pytest.raises(MediaFetchError, match="not valid compressed data"):
        fetcher().fetch(url)


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", "over-long status or header line"),
        (b"HTTP/1.1 200 " + b"O" * 100_000 + b"\r\n\r\n", "over-long status or header line"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Many: y\r\n" * 10_000 + b"\r\n", "got more than 100 headers"),
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed response"),
    ],
)
def test_huge_or_broken_headers_are_refused(media_server, head, message):
    url = media_server.route("/headers", answer(head, b"x"))
    error, elapsed, peak = measure(lambda: fetcher().fetch(url))
    assert isinstance(error, MediaFetchError) and message in str(error)
    assert elapsed < 1 and peak < 2_000_000


def test_endless_headers_are_cut(media_server):
    url = media_server.route(
        "/endless-headers", answer(b"HTTP/1.1 200 OK\r\n", paced(b"X-More: " + b"h" * 1000 + b"\r\n", 0.0001))
    )
    error, elapsed, peak = measure(lambda: fetcher().fetch(url))
    assert isinstance(error, MediaFetchError) and "got more than 100 headers" in str(error)
    assert elapsed < 1 and peak < 2_000_000
