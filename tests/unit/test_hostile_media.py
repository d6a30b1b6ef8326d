"""Hostile media: whatever bytes a URL serves, ``load_media`` (then ``hash_loaded``)
returns a usable Media or raises InvalidInput with a clear reason, in bounded
time and memory.

Time is wall clock per file. Memory is measured twice: tracemalloc's peak (Python
objects and numpy arrays) and the growth of the process's peak resident set
(``VmHWM``, reset through /proc/self/clear_refs before each file), which also sees
what Pillow, OpenCV, libjpeg, libpng and FFmpeg allocate. Where the RSS peak
cannot be reset, decoded pictures are still checked against ``max_image_pixels``.
Every file is synthetic (tests/support/hostile.py); nothing is a real photo.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from moderation.errors import InvalidInput, MediaDecodeError, MediaTooLarge
from moderation.hashing import video
from moderation.media.decode import CONTENT_TYPES
from moderation.media.load import Media, MediaLimits, load_media
from moderation.pipeline import hash_loaded
from tests.support import hostile as H

LIMITS = MediaLimits()
TIME_LIMIT_S = 2.0
MB = 1 << 20
CODES = {"media_undecodable", "media_too_large"}
REPORT = os.environ.get("HOSTILE_MEDIA_REPORT")  # set to a path: one line per file measured


@pytest.fixture(autouse=True)
def opencv_video_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """vpdq runs in a child process with its own limits (tests/unit/test_video.py);
    here videos are hashed in-process by OpenCV, the path whose cost is the worker's."""
    monkeypatch.setattr(video, "vpdq_available", lambda: False)


# -- measuring ------------------------------------------------------------------------------


def _reset_peak_rss() -> int | None:
    """Reset VmHWM to the current RSS; the current RSS in bytes, or None if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    return _status("VmRSS")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed memory back to the OS: a fair baseline
    except (OSError, AttributeError):
        pass


@dataclass
class Run:
    name: str
    result: Media | InvalidInput
    seconds: float
    traced: int  # bytes, tracemalloc peak
    rss: int | None  # bytes of peak RSS growth

    def describe(self) -> str:
        if isinstance(self.result, Media):
            shapes = {p.shape for p in self.result.pictures}
            outcome = (
                f"usable {self.result.kind} {self.result.content_type} {len(self.result.pictures)}x{shapes}"
            )
        else:
            outcome = f"{self.result.code}: {self.result}"
        rss = "n/a" if self.rss is None else f"{self.rss / MB:.0f} MB"
        return f"{self.name}: {self.seconds:.2f} s, traced {self.traced / MB:.0f} MB, rss +{rss}; {outcome}"


def run(
    name: str, data: bytes, limits: MediaLimits = LIMITS, memory: bool = True, variants: bool = True
) -> Run:
    """load_media then hash_loaded, measured (memory too unless ``memory`` is False:
    resetting the peak costs tens of milliseconds); InvalidInput is an outcome,
    anything else fails the test."""
    base = None
    if memory:
        _trim()
        base = _reset_peak_rss()
        tracemalloc.start()
    started = time.perf_counter()
    try:
        media = load_media(data, limits)
        hash_loaded(data, media, limits, variants=variants)
        result: Media | InvalidInput = media
    except InvalidInput as exc:
        result = exc
    finally:
        seconds = time.perf_counter() - started
        _cur, traced = tracemalloc.get_traced_memory()
        if memory:
            tracemalloc.stop()
    rss = None if base is None else max(0, _status("VmHWM") - base)
    measured = Run(name, result, seconds, traced, rss)
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(measured.describe() + "\n")
    return measured


def check(
    measured: Run, limits: MediaLimits = LIMITS, seconds: float = TIME_LIMIT_S, rss_mb: int = 64
) -> None:
    """The contract: a usable Media within the pixel limit, or InvalidInput with a
    reason; under ``seconds`` and ``rss_mb`` of peak memory growth."""
    result = measured.result
    if isinstance(result, Media):
        assert result.pictures, measured.describe()
        for picture in result.pictures:
            assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
            assert picture.shape[0] * picture.shape[1] <= limits.max_image_pixels, measured.describe()
        assert result.content_type in {*CONTENT_TYPES.values(), "video/mp4", "video/webm"}
    else:
        assert result.code in CODES and len(str(result)) > 10, measured.describe()
        assert "0x" not in str(result) or "object at" not in str(result)  # no memory addresses
    assert measured.seconds < seconds, measured.describe()
    assert measured.traced < rss_mb * MB, measured.describe()
    if measured.rss is not None:
        assert measured.rss < rss_mb * MB, measured.describe()


def expect(measured: Run, pattern: str) -> None:
    """``pattern``: "usable", a regex the error must match, or both joined by "|"."""
    alternatives = pattern.split("|")
    if isinstance(measured.result, Media):
        assert "usable" in alternatives, measured.describe()
        return
    errors = "|".join(a for a in alternatives if a != "usable")
    assert errors and re.search(errors, str(measured.result)), measured.describe()


# -- truncation, empty, random ------------------------------------------------------------


def cut_points(size: int) -> Iterator[int]:
    yield from range(0, min(size, 40))  # every byte of the headers
    yield from range(40, size, max(1, size // 40))  # and across the body
    yield from (size - 2, size - 1)


@pytest.mark.parametrize("name", sorted(H.seed_files()))
def test_truncated_files_are_refused_or_decoded_at_every_cut(name: str) -> None:
    data = H.seed_files()[name]
    outcomes: dict[str, int] = {}
    for cut in sorted(set(cut_points(len(data)))):
        measured = run(f"{name}[:{cut}]", data[:cut], memory=cut in (0, 20, len(data) // 2), variants=False)
        check(measured, seconds=1.0, rss_mb=64)
        key = "usable" if isinstance(measured.result, Media) else measured.result.code
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("media_undecodable", 0) > len(data) // 1000, outcomes


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty", b""),
        ("one byte", b"\xff"),
        ("zeros", bytes(100_000)),
        ("0xFF", b"\xff" * 100_000),
        *((f"random {seed}", np.random.default_rng(seed).bytes(200_000)) for seed in range(5)),
        ("JPEG magic then random", b"\xff\xd8\xff" + np.random.default_rng(9).bytes(50_000)),
        ("PNG magic then random", b"\x89PNG\r\n\x1a\n" + np.random.default_rng(10).bytes(50_000)),
        ("GIF magic then random", b"GIF89a" + np.random.default_rng(11).bytes(50_000)),
        ("RIFF WEBP then random", b"RIFF\0\0\1\0WEBPVP8 " + np.random.default_rng(12).bytes(50_000)),
        ("ftyp then random", b"\0\0\0\x18ftypisom" + np.random.default_rng(13).bytes(50_000)),
        ("EBML then random", b"\x1a\x45\xdf\xa3" + np.random.default_rng(14).bytes(50_000)),
    ],
)
def test_empty_and_random_bytes_are_refused(name: str, data: bytes) -> None:
    measured = run(name, data)
    check(measured)
    assert isinstance(measured.result, MediaDecodeError), measured.describe()


# -- decompression bombs --------------------------------------------------------------------

BOMBS: list[tuple[str, Callable[[], bytes], str, float, int]] = [
    # name, file, expected outcome, seconds, peak RSS growth (MB)
    ("PNG 60000x60000", lambda: H.png_with_size(60000, 60000), "implausibly large", 0.5, 16),
    ("PNG 2^31 pixels", lambda: H.png_with_size(65536, 32768), "implausibly large", 0.5, 16),
    ("PNG 7000x7000, 60-byte body", lambda: H.png_with_size(7000, 7000), "could not be decoded", 1.0, 200),
    ("PNG 16-bit 7000x7000", lambda: H.png_with_size(7000, 7000, depth=16), "could not be decoded", 1.0, 350),
    ("PNG 1x1, IDAT inflating to 1 GB", lambda: H.png_zlib_bomb(1, 1, 1 << 30), "zlib bomb", 0.5, 32),
    (
        "PNG 1000x1000, IDAT inflating to 1 GB",
        lambda: H.png_zlib_bomb(1000, 1000, 1 << 30),
        "zlib bomb",
        0.5,
        32,
    ),
    (
        "PNG 7000x7000, IDAT inflating to 1 GB",
        lambda: H.png_zlib_bomb(7000, 7000, 1 << 30),
        "zlib bomb",
        1.0,
        32,
    ),
    (
        "PNG of 48 bytes, IDAT declaring 3.4 GB",
        lambda: H.png_declaring_chunk(b"IDAT", 0xCB001A02),
        "past the end",
        0.5,
        32,
    ),
    (
        "PNG of 48 bytes, tEXt declaring 2 GB",
        lambda: H.png_declaring_chunk(b"tEXt", 0x7FFFFFFF),
        "past the end|Truncated File Read",  # Pillow reads tEXt before IDAT
        0.5,
        32,
    ),
    (
        "PNG of 48 bytes, IDAT declaring 4 GB",
        lambda: H.png_declaring_chunk(b"IDAT", 0xFFFFFFF0),
        "past the end",
        0.5,
        32,
    ),
    (
        "PNG iCCP inflating to 1 GB",
        lambda: H.png_with_chunk(b"iCCP", b"p\0\0" + H.zeros_deflate(1 << 30)),
        "TEXT_CHUNK",
        0.5,
        32,
    ),
    (
        "PNG zTXt inflating to 1 GB",
        lambda: H.png_with_chunk(b"zTXt", b"k\0\0" + H.zeros_deflate(1 << 30)),
        "TEXT_CHUNK",
        0.5,
        32,
    ),
    ("GIF 60000x60000", lambda: H.gif_bomb((60000, 60000), (60000, 60000)), "implausibly large", 0.5, 16),
    (
        "GIF 10x10 screen, 60000x60000 frame",
        lambda: H.gif_bomb((10, 10), (60000, 60000)),
        "implausibly large",
        0.5,
        16,
    ),
    (
        "GIF 5000 frames declaring 7000x7000",
        lambda: H.gif_bomb((7000, 7000), (7000, 7000), 5000),
        "could not be decoded",
        1.0,
        450,
    ),
    (
        "GIF 3000 valid frames of 2000x2000",
        lambda: H.gif_animation_bomb((2000, 2000), 3000),
        "usable",
        1.5,
        200,
    ),
    ("GIF 50000 frames of 100x100", lambda: H.gif_animation_bomb((100, 100), 50000), "usable", 1.0, 64),
    ("WebP VP8X 16384x16384", lambda: H.webp_vp8x_with_size(16384, 16384), "implausibly large", 0.5, 16),
    ("WebP VP8L 16383x16383", lambda: H.webp_vp8l_with_size(16383, 16383), "implausibly large", 0.5, 16),
    (
        "WebP VP8X 7000x7000, tiny body",
        lambda: H.webp_vp8x_with_size(7000, 7000),
        "not a recognised",
        0.5,
        16,
    ),
    # Four 16-Mpx frames are kept (192 MB) and libwebp composes on two RGBA canvases.
    ("WebP 1000 frames of 4000x4000", lambda: H.webp_animation_bomb((4000, 4000), 1000), "usable", 2.0, 640),
    ("JPEG 60000x60000", lambda: H.jpeg_with_size(60000, 60000), "implausibly large", 0.5, 16),
    ("JPEG 65535x65535", lambda: H.jpeg_with_size(65535, 65535), "implausibly large", 0.5, 16),
    (
        "progressive JPEG 13000x13000, 2 KB",
        lambda: H.jpeg_with_size(13000, 13000, True, 0),
        "progressive JPEG",
        0.5,
        16,
    ),
    ("baseline JPEG 13000x13000, 2 KB", lambda: H.jpeg_with_size(13000, 13000), "usable", 0.5, 64),
    ("JPEG 7000x7000 with 1000 scans", lambda: H.jpeg_scan_bomb(7000, 7000, 1000), "1001 scans", 0.5, 16),
    ("JPEG 1000x1000 with 20000 scans", lambda: H.jpeg_scan_bomb(1000, 1000, 20000), "20001 scans", 0.5, 16),
    ("TIFF 60000x60000", lambda: H.tiff_with_size(60000, 60000), "implausibly large", 0.5, 16),
    # The safety property is the bound, not the choice: OpenCV 4.x decodes this
    # strip (padding the missing rows), 5.x refuses its implausible byte count.
    (
        "TIFF 7000x7000, one 60-byte strip",
        lambda: H.tiff_with_size(7000, 7000),
        "usable|could not be decoded",
        1.5,
        450,
    ),
    (
        "TIFF 2^30 x 2^30 tiles",
        lambda: H.tiff_with_size(7000, 7000, tile=(1 << 30, 1 << 30)),
        "could not be decoded",
        0.5,
        64,
    ),
    ("TIFF 3 pages, last IFD loops", lambda: H.tiff_with_size(100, 100, pages=3), "usable", 0.5, 64),
]


@pytest.mark.parametrize(
    ("build", "outcome", "seconds", "rss_mb"),
    [pytest.param(b, o, s, m, id=n) for n, b, o, s, m in BOMBS],
)
def test_decompression_bombs_are_refused_or_decoded_within_limits(
    build: Callable[[], bytes], outcome: str, seconds: float, rss_mb: int, request: pytest.FixtureRequest
) -> None:
    measured = run(request.node.callspec.id, build())
    check(measured, seconds=seconds, rss_mb=rss_mb)
    expect(measured, outcome)


@pytest.mark.parametrize("extra", [0, 1000, 3 << 20])
def test_an_interlaced_png_is_checked_against_its_adam7_size(extra: int) -> None:
    """The zlib-bomb check must know what a picture legitimately inflates to,
    interlaced (Adam7: seven passes, one filter byte per row of each) included."""
    import zlib

    width, height = 301, 203
    passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]
    raw = b"".join(
        (b"\0" + bytes(3 * len(range(x0, width, dx)))) * len(range(y0, height, dy))
        for x0, y0, dx, dy in passes
        if len(range(x0, width, dx))
    )
    header = H.png_with_size(width, height, idat=zlib.compress(raw + bytes(extra)))
    data = bytearray(header)
    data[28] = 1  # IHDR interlace method: Adam7
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    measured = run(f"interlaced PNG + {extra} bytes", bytes(data))
    check(measured)
    expect(measured, "usable" if extra < (1 << 20) else "zlib bomb")
    if isinstance(measured.result, Media):
        assert measured.result.pictures[0].shape == (height, width, 3)


def test_baseline_jpeg_of_169_megapixels_decodes_at_one_eighth() -> None:
    measured = run("baseline JPEG 13000x13000", H.jpeg_with_size(13000, 13000))
    assert isinstance(measured.result, Media)
    assert measured.result.pictures[0].shape == (1625, 1625, 3)


def test_progressive_jpeg_within_the_pixel_limit_still_decodes() -> None:
    measured = run("progressive JPEG 6000x6000", H.jpeg_with_size(6000, 6000, progressive=True))
    check(measured, rss_mb=400)  # its coefficients: about 1.5 x 2 bytes per pixel (4:2:0)
    expect(measured, "usable")


def test_a_legitimate_progressive_jpeg_has_few_scans() -> None:
    data = H.seed_files()["jpeg_progressive"]
    assert 1 < data.count(b"\xff\xda") <= 12
    expect(run("progressive seed", data), "usable")


def test_an_animated_gif_frame_growing_the_canvas_past_the_limit_stops_sampling() -> None:
    """GIF frames may lie outside the logical screen; Pillow grows the canvas. A
    frame that would grow it past max_image_pixels ends the sampling there."""
    small = MediaLimits(max_image_pixels=100_000)
    data = H.gif_frames((100, 100), [(0, 0, 100, 100, False)] + [(60000, 60000, 100, 100, False)] * 3)
    measured = run("GIF frame at 60000,60000", data, small)
    check(measured, small)


# -- polyglots, look-alikes, wrong declared type ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "build", "outcome"),
    [
        ("JPEG + ZIP", H.jpeg_zip_polyglot, "usable"),
        ("GIFAR (GIF + JAR)", H.gifar, "usable"),
        ("JPEG with an HTML comment", H.jpeg_html_polyglot, "usable"),
        ("JPEG + PDF", H.jpeg_pdf_polyglot, "usable"),
        ("PNG + trailing HTML", lambda: H.seed_files()["png"] + H.HTML, "usable"),
        ("HTML then JPEG", H.html_then_jpeg, "looks like an HTML document"),
        ("SVG with a script", lambda: H.SVG, "looks like an SVG document"),
        ("HTML", lambda: H.HTML, "looks like an HTML document"),
        ("PDF", lambda: H.PDF, "looks like a PDF document"),
        ("ZIP", H.zip_bytes, "looks like a ZIP archive"),
        ("AVIF (ftyp, not a video)", lambda: H.pil_bytes("AVIF", (64, 64)), "not supported"),
        ("ICO", lambda: H.pil_bytes("ICO", (64, 64)), "not supported"),
        ("PSD magic", lambda: b"8BPS\0\1" + bytes(200), "not supported"),
    ],
)
def test_polyglots_decode_as_their_image_and_non_images_are_named(
    name: str, build: Callable[[], bytes], outcome: str
) -> None:
    measured = run(name, build())
    check(measured)
    expect(measured, outcome)
    if outcome == "usable":
        assert isinstance(measured.result, Media)
        assert measured.result.content_type.startswith("image/")  # served as an image, never as HTML/ZIP/PDF


@pytest.mark.parametrize(
    ("declared", "seed", "kind", "content_type"),
    [
        ("image/png", "jpeg", "image", "image/jpeg"),
        ("image/jpeg", "png", "image", "image/png"),
        ("image/gif", "webp_animated", "animation", "image/webp"),
        ("image/jpeg", "mp4", "video", "video/mp4"),
        ("video/mp4", "webm", "video", "video/webm"),
        ("video/mp4", "gif_animated", "animation", "image/gif"),
        ("text/html", "bmp", "image", "image/bmp"),
    ],
)
def test_the_bytes_decide_the_type_not_the_event(
    declared: str, seed: str, kind: str, content_type: str
) -> None:
    """An event's media_type is the uploader's claim: the worker never uses it to
    choose a decoder, and the console serves the type the bytes are."""
    from moderation.events.uploads import make_upload_event, parse_upload_event

    event = parse_upload_event(
        json.dumps(make_upload_event("e", "c", "u", "https://cdn.example/x", declared)).encode()
    )
    assert event.media_type == declared
    media = load_media(H.seed_files()[seed], LIMITS)
    assert (media.kind, media.content_type) == (kind, content_type)


# -- corrupt video containers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "build", "outcome"),
    [
        ("MP4 moov zeroed", lambda: H.mp4_broken_moov(H.seed_files()["mp4"], "zero"), "could not be opened"),
        (
            "MP4 moov garbage",
            lambda: H.mp4_broken_moov(H.seed_files()["mp4"], "garbage"),
            "could not be opened",
        ),
        ("MP4 moov size 4 GB", lambda: H.mp4_broken_moov(H.seed_files()["mp4"], "huge"), "usable|could not"),
        (
            "MP4 without moov",
            lambda: H.mp4_broken_moov(H.seed_files()["mp4"], "missing"),
            "could not be opened",
        ),
        (
            "MP4 claiming 60000x60000",
            lambda: H.mp4_with_size(H.seed_files()["mp4"], 60000, 60000),
            "usable|too",
        ),
        ("MP4 ftyp only", lambda: b"\0\0\0\x18ftypisom\0\0\0\0isommp41", "could not be opened"),
        (
            "WebM garbage after the EBML header",
            lambda: H.webm_with_garbage(H.seed_files()["webm"]),
            "could not",
        ),
        ("WebM EBML magic only", lambda: b"\x1a\x45\xdf\xa3", "could not be opened"),
        (
            "WebM claiming 60000x60000",
            lambda: H.webm_with_size(H.seed_files()["webm"], 60000, 60000),
            "usable|too",
        ),
        ("WebM with its clusters reversed", lambda: _webm_shuffled(), "usable|could not|no decodable"),
    ],
)
def test_corrupt_video_containers_are_refused_with_a_reason(
    name: str, build: Callable[[], bytes], outcome: str
) -> None:
    measured = run(name, build())
    check(measured, rss_mb=128)
    expect(measured, outcome)


def _webm_shuffled() -> bytes:
    data = H.seed_files()["webm"]
    head, body = data[:200], data[200:]
    return head + body[len(body) // 2 :] + body[: len(body) // 2]


def test_video_frames_over_the_pixel_limit_are_too_large() -> None:
    small = MediaLimits(max_image_pixels=64 * 80 - 1)
    for name in ("mp4", "webm"):
        measured = run(f"{name} over the pixel limit", H.seed_files()[name], small)
        assert isinstance(measured.result, MediaTooLarge), measured.describe()
        assert "over 5119" in str(measured.result)


# -- metadata -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "build", "rss_mb"),
    [
        (
            "JPEG: Exif IFD of 5000 entries pointing 4 GB away, looping",
            lambda: H.jpeg_with_app_segments(0xE1, H.huge_exif(), 1),
            64,
        ),
        (
            "JPEG: 300 APP1 segments of 64 KB (19 MB of Exif)",
            lambda: H.jpeg_with_app_segments(0xE1, b"Exif\0\0" + bytes(65000), 300),
            160,
        ),
        ("JPEG: 300 comments of 64 KB", lambda: H.jpeg_with_app_segments(0xFE, b"x" * 65000, 300), 160),
        ("PNG: eXIf chunk with a looping IFD", lambda: H.png_with_chunk(b"eXIf", H.huge_exif()[6:]), 64),
        ("PNG: 16 MB tEXt chunk", lambda: H.png_with_chunk(b"tEXt", b"k\0" + b"v" * (16 << 20)), 160),
    ],
)
def test_huge_metadata_is_survived(name: str, build: Callable[[], bytes], rss_mb: int) -> None:
    measured = run(name, build())
    check(measured, rss_mb=rss_mb)
    expect(measured, "usable|not a recognised")


# -- formats that were wrongly refused or half-read --------------------------------------------


def test_a_multi_picture_jpeg_is_a_jpeg() -> None:
    """MPO (multi-picture format: Ultra HDR gain maps, phone depth maps) was
    refused as an unsupported format; it is a JPEG whose first picture is shown."""
    first, second = (Image.open(io.BytesIO(H.pil_bytes("JPEG", (64, 64), seed=s))) for s in (1, 2))
    buf = io.BytesIO()
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    measured = run("MPO", buf.getvalue())
    check(measured)
    assert isinstance(measured.result, Media) and measured.result.content_type == "image/jpeg"


def test_an_animated_png_gives_frames_across_the_animation() -> None:
    """APNG was classified on its default image only: a benign first frame hid the rest."""
    colours = [(255, 0, 0)] + [(0, 100 + 10 * i, 0) for i in range(6)] + [(0, 0, 255)]  # distinct frames
    frames = [Image.new("RGB", (40, 30), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:], duration=100)
    measured = run("APNG", buf.getvalue())
    check(measured)
    media = measured.result
    assert isinstance(media, Media) and media.kind == "animation" and len(media.pictures) == 4
    assert (
        media.pictures[0][15, 20][2] > 200 and media.pictures[-1][15, 20][0] > 200
    )  # red first, blue last (BGR)


def _gif_turning_rgba() -> bytes:
    """Frame 0 opaque; later frames transparent (so Pillow makes them RGBA when
    loaded), with a local palette, the first of them outside the screen."""
    return H.gif_frames((48, 32), [(0, 0, 48, 32, False), (4000, 200, 48, 32, True), (0, 0, 48, 32, True)])


def test_gif_frames_whose_mode_changes_on_load_become_consistent_arrays() -> None:
    """Found by bench/fuzz_decode.py (a segfault): a GIF frame is RGB until loaded
    and RGBA after. ``np.asarray`` on it before loading got RGB bytes with an RGBA
    shape from Pillow, and numpy read past the buffer. Frames are now loaded,
    converted and their byte count checked before numpy sees them."""
    from moderation.media.decode import _bgr

    data = _gif_turning_rgba()
    with Image.open(io.BytesIO(data)) as img:
        img.seek(1)
        frame = _bgr(img)
        assert img.mode == "RGBA"  # it changed while loading
        assert frame.shape == (img.height, img.width, 3) and frame.flags.c_contiguous
    for _ in range(5):
        check(run("GIF frames turning RGBA", data))
