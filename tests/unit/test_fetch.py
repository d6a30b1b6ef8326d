from __future__ import annotations

import time

import pytest

from moderation.errors import MediaFetchError, MediaTooLarge
from moderation.media.fetch import MediaFetcher


def fetcher(**kw) -> MediaFetcher:
    args = dict(max_bytes=10_000, connect_timeout_s=1.0, read_timeout_s=1.0, retry_backoff_s=0.01)
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
