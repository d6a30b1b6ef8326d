"""Decode image bytes with OpenCV, refusing decompression bombs.

The image header is read first (with Pillow, which parses headers without
decoding pixels, and only for the formats served) so that a 50,000 x 50,000 PNG
is refused before any pixel buffer is allocated. Large JPEGs are decoded at 1/2,
1/4 or 1/8 scale inside the JPEG decoder (DCT scaling, a proper low-pass), as
far as the shorter side stays at least ``min_side``: the classifier needs at
most 299 px and PDQ 64 px, and a 12-megapixel photo decodes and hashes about
eight times faster. No image is ever decoded to more than ``max_pixels`` pixels.
Animated GIF, WebP and PNG give a few frames spread over the animation.

What a header alone does not show is checked before decoding too, because the
decoders' cost is not bounded by the picture they return:

- a progressive (or multi-scan) JPEG keeps the coefficients of the whole
  full-size picture in memory, whatever the scale it is decoded at (a 2 KB file
  declaring 13,000 x 13,000 made libjpeg allocate 1 GB): its full size must be
  within ``max_pixels``;
- each scan of a progressive JPEG is one more pass over every block (1,000
  empty scans, 22 KB, took 7 s at 7,000 x 7,000): scans are limited;
- libpng inflates the whole IDAT stream even after the picture is complete
  (1 MB of zlib stream inflating to 1 GB took 2.2 s): a stream that inflates to
  more than the header's picture needs is refused.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from moderation.errors import MediaDecodeError

# Pillow format name -> the MIME type media is served with in the review console.
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
ANIMATED = {"GIF", "WEBP", "PNG"}  # APNG: Pillow reads its frames, OpenCV the default image
REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
ANIMATION_SCAN_FRAMES = 240  # frames sampled from the first this many (seeking decodes each one)
ANIMATION_SCAN_PIXELS = 100_000_000  # and at most this many pixels decoded to sample them
JPEG_FREE_SCANS = 64  # scans any JPEG may have (libjpeg's progressive script: 10; MPF files add some)
JPEG_SCAN_PIXELS = 2_000_000_000  # beyond that, scans x pixels (about 0.3 s of decoding)
PNG_SLACK_BYTES = 1 << 20  # inflated IDAT data tolerated beyond what the picture needs
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand input by more than this
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass(frozen=True)
class _Header:
    format: str
    width: int
    height: int


def _probe(data: bytes) -> _Header:
    if not data:
        raise MediaDecodeError("media is empty (0 bytes)")
    try:
        with _quiet(), Image.open(io.BytesIO(data), formats=list(CONTENT_TYPES)) as img:
            fmt = "JPEG" if img.format == "MPO" else str(img.format)
            return _Header(fmt, int(img.width), int(img.height))
    except Image.DecompressionBombError as exc:
        raise MediaDecodeError(f"image dimensions are implausibly large: {exc}") from None
    except Exception as exc:  # Pillow raises many types for junk input
        detail = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))  # no memory addresses
        raise MediaDecodeError(
            f"not a recognised image ({type(exc).__name__}: {detail[:200]}){_looks_like(data)}"
        ) from None


@contextmanager
def _quiet() -> Iterator[None]:
    """Pillow warns once per oddity (a JPEG's Exif block of 5,000 bad tags gave
    5,000 distinct UserWarnings on stderr, each kept in the warnings registry):
    hostile files must not flood the logs. Decoding runs on the worker's one
    thread, so swapping the filters here is safe."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _looks_like(data: bytes) -> str:
    """'; looks like ...' for common non-images, to make dead letters readable."""
    head = data[:1024].lstrip().lower()
    kinds = [
        (b"%pdf-" in head, "a PDF document"),  # PDF readers look for it in the first kilobyte
        (head.startswith(b"pk\x03\x04"), "a ZIP archive"),
        (b"<svg" in head, "an SVG document"),
        (head.startswith((b"<!doctype html", b"<html")) or b"<html" in head, "an HTML document"),
        (head.startswith(b"<?xml"), "an XML document"),
        (head.startswith(b"\x1f\x8b"), "gzip data"),
        (head.startswith((b"\x7felf", b"mz")), "an executable"),
        (head.startswith((b"{", b"[")), "JSON or text"),
    ]
    for matched, kind in kinds:
        if matched:
            return f"; looks like {kind}"
    if (
        data[4:8] == b"ftyp"  # HEIF, AVIF
        or data[:4] in (b"\x00\x00\x01\x00", b"8BPS")  # ICO, PSD
        or data[:2] == b"\xff\x4f"  # JPEG 2000 codestream
        or data[4:12] == b"jP  \r\n\x87\n"  # JPEG 2000
    ):
        return "; an image format that is not supported (supported: " + ", ".join(CONTENT_TYPES) + ")"
    return ""


def jpeg_scale(width: int, height: int, max_pixels: int, min_side: int) -> int:
    """The JPEG decoder's scale-down factor (1, 2, 4 or 8): as small as possible
    while keeping the shorter side >= ``min_side`` (0: never shrink for speed),
    and large enough to stay within ``max_pixels``; 0 if even 1/8 is too many."""
    factor = 1
    if min_side > 0:
        for candidate in (2, 4, 8):
            if min(width, height) // candidate >= min_side:
                factor = candidate
    while -(-width // factor) * -(-height // factor) > max_pixels:
        if factor == 8:
            return 0
        factor *= 2
    return factor


def decode_image(data: bytes, max_pixels: int, min_side: int = 0) -> tuple[str, np.ndarray]:
    """(format, BGR uint8 pixels) of the image (first frame for animations)."""
    fmt, _width, _height, image = decode_with_header(data, max_pixels, min_side)
    return fmt, image


def decode_with_header(data: bytes, max_pixels: int, min_side: int = 0) -> tuple[str, int, int, np.ndarray]:
    """(format, header width, header height, BGR uint8 pixels): the header is read
    once, without decoding pixels, and the pixel limit checked against it. The
    format is one of CONTENT_TYPES (a multi-picture JPEG, MPO, is a JPEG)."""
    header = _probe(data)
    fmt, width, height = header.format, header.width, header.height
    if fmt not in CONTENT_TYPES:
        raise MediaDecodeError(f"unsupported image format {fmt}")
    factor = jpeg_scale(width, height, max_pixels, min_side) if fmt == "JPEG" else 1
    if factor == 0 or (factor == 1 and width * height > max_pixels):
        raise MediaDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    if fmt == "JPEG":
        _check_jpeg(data, width, height, max_pixels)
    elif fmt == "PNG":
        _check_png(data, width, height)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR))
    except cv2.error as exc:
        detail = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "OpenCV error"
        raise MediaDecodeError(f"{fmt} image could not be decoded ({detail})") from None
    if image is None and fmt == "GIF":
        frames = _pil_frames(data, 1, max_pixels)
        image = frames[0] if frames else None
    if image is None or image.size == 0:
        raise MediaDecodeError(f"{fmt} image could not be decoded (truncated or corrupt)")
    if image.shape[0] * image.shape[1] > max_pixels:  # the decoder disagreed with the header
        raise MediaDecodeError(
            f"{fmt} image decoded to {image.shape[1]}x{image.shape[0]} pixels, over the limit of {max_pixels}"
        )
    return fmt, width, height, image


# -- checks a header alone does not make ------------------------------------------------


@dataclass(frozen=True)
class _JpegLayout:
    buffered: bool  # the decoder holds the whole picture's coefficients (progressive, multi-scan)
    scans: int  # SOS markers from the first scan on (an upper bound: MPF images add theirs)


def _jpeg_layout(data: bytes) -> _JpegLayout | None:
    """The frame and first scan headers; None if the markers before the first scan
    are malformed (the decoder then reports the file as corrupt)."""
    i, size = 2, len(data)
    progressive, components = False, 0
    while i + 4 <= size:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length
            i += 2
            continue
        if marker == 0xD9:
            return None
        (length,) = struct.unpack_from(">H", data, i + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 10 <= size:
            progressive = marker in (0xC2, 0xC6, 0xCA, 0xCE)
            components = data[i + 9]
        elif marker == 0xDA and i + 5 <= size:
            buffered = progressive or data[i + 4] < components
            return _JpegLayout(buffered, data.count(b"\xff\xda", i))
        i += 2 + length
    return None


def _check_jpeg(data: bytes, width: int, height: int, max_pixels: int) -> None:
    layout = _jpeg_layout(data)
    if layout is None:
        return
    pixels = width * height
    if layout.buffered and pixels > max_pixels:
        raise MediaDecodeError(
            f"progressive JPEG is {width}x{height} = {pixels} pixels, over the limit of {max_pixels} "
            "(progressive and multi-scan JPEGs are held in memory at full size, whatever the scale)"
        )
    if layout.scans > JPEG_FREE_SCANS and layout.scans * pixels > JPEG_SCAN_PIXELS:
        raise MediaDecodeError(
            f"JPEG has {layout.scans} scans of {width}x{height} pixels, over the decoding budget "
            f"({JPEG_SCAN_PIXELS} pixel-scans; each scan is a pass over the whole picture)"
        )


def _png_raw_size(width: int, height: int, depth: int, colour: int, interlaced: bool) -> int | None:
    """Bytes of filtered scanlines the picture needs; None for an invalid header."""
    channels = _PNG_CHANNELS.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        return None
    bits = channels * depth
    if not interlaced:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for x0, y0, dx, dy in (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
    ):
        w, h = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if w > 0 and h > 0:
            total += h * (1 + (w * bits + 7) // 8)
    w, h = width, height // 2  # pass 7: every odd row, full width
    return total + (h * (1 + (w * bits + 7) // 8) if h else 0)


def _check_png(data: bytes, width: int, height: int) -> None:
    """Refuse a chunk whose declared length runs past the end of the file (OpenCV
    allocates the declared length of an IDAT or tEXt chunk up front: a 48-byte
    file declaring 3.4 GB made it allocate and touch 3.2 GB; found by
    bench/fuzz_decode.py), and IDAT data that inflates to more than the picture
    needs (a zlib bomb: libpng would inflate all of it). Only streams that could
    expand that far are inflated here, in 1 MB steps, never keeping the output."""
    chunks: list[memoryview] = []
    raw_size: int | None = None
    view = memoryview(data)
    i = 8
    while i + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, i)
        kind = data[i + 4 : i + 8]
        if length > 0x7FFFFFFF or i + 12 + length > len(data):
            name = repr(kind.decode("ascii")) if kind.isalpha() else "with an invalid type"
            raise MediaDecodeError(
                f"PNG chunk {name} at byte {i} declares {length} bytes, past the end "
                f"of the file ({len(data)} bytes): truncated or corrupt"
            )
        body = view[i + 8 : i + 8 + length]
        if kind == b"IHDR" and len(body) >= 13:
            depth, colour, _compression, _filter, interlace = body[8], body[9], body[10], body[11], body[12]
            raw_size = _png_raw_size(width, height, depth, colour, interlace == 1)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
        i += 12 + length
    if raw_size is None:
        return
    allowed = raw_size + PNG_SLACK_BYTES
    if sum(len(c) for c in chunks) * _DEFLATE_MAX_RATIO <= allowed:
        return  # cannot inflate past the limit
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for chunk in chunks:
            pending: bytes | memoryview = chunk
            while pending:
                produced += len(inflater.decompress(pending, 1 << 20))
                if produced > allowed:
                    raise MediaDecodeError(
                        f"PNG pixel data inflates to more than the {raw_size} bytes a {width}x{height} "
                        "picture needs (a zlib bomb)"
                    )
                if inflater.eof:
                    return
                pending = inflater.unconsumed_tail
    except zlib.error:
        return  # corrupt: the decoder says so


# -- animations ---------------------------------------------------------------------------


def animation_frames(
    data: bytes,
    fmt: str,
    width: int,
    height: int,
    count: int,
    max_pixels: int,
    first: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Up to ``count`` frames spread over an animated GIF, WebP or PNG (first frame
    included: ``first`` if given, the caller's decode of it); [] for a still image.
    Frames decoded in total stay within ``ANIMATION_SCAN_FRAMES`` and
    ``min(count * max_pixels, ANIMATION_SCAN_PIXELS)`` pixels, each within ``max_pixels``."""
    if fmt not in ANIMATED or count < 2:
        return []
    try:
        with _quiet(), Image.open(io.BytesIO(data), formats=[fmt]) as img:
            total = int(getattr(img, "n_frames", 1))
    except Exception:
        return []
    if total < 2:
        return []
    pixel_budget = min(count * max_pixels, ANIMATION_SCAN_PIXELS)
    budget = max(1, min(total, ANIMATION_SCAN_FRAMES, pixel_budget // max(width * height, 1)))
    return _pil_frames(data, count, max_pixels, budget, first)


def _pil_frames(
    data: bytes, count: int, max_pixels: int, scan: int = 1, first: np.ndarray | None = None
) -> list[np.ndarray]:
    """``count`` evenly spread frames among the first ``scan`` (Pillow decodes
    frames in order, so seeking to frame k decodes all before it). Stops at a frame
    that grows the canvas past ``max_pixels`` (GIF frames may be larger than the screen)."""
    wanted = sorted({round(i * (scan - 1) / max(count - 1, 1)) for i in range(count)}) if scan > 1 else [0]
    frames: list[np.ndarray] = []
    try:
        with _quiet(), Image.open(io.BytesIO(data), formats=list(ANIMATED)) as img:
            for index in range(wanted[-1] + 1):
                if index:
                    img.seek(index)  # decodes the frame before
                if img.width * img.height > max_pixels:
                    break
                if index == 0 and first is not None:
                    frames.append(first)
                elif index in wanted:
                    frames.append(_bgr(img))
    except Exception:
        pass  # a truncated animation keeps the frames decoded so far
    return frames


def _bgr(img: Image.Image) -> np.ndarray:
    """The current frame as BGR pixels. Never ``np.asarray(img)`` on a frame not yet
    loaded: a GIF frame's mode can change while it loads (RGB -> RGBA with
    transparency), and Pillow then hands numpy RGB bytes with an RGBA shape, which
    numpy trusts: it read past the buffer and crashed the process (found by
    bench/fuzz_decode.py). Load, convert, and check the byte count."""
    img.load()
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    width, height = rgb.size
    raw = rgb.tobytes()
    if len(raw) != width * height * 3:
        raise ValueError(f"frame has {len(raw)} bytes for {width}x{height} RGB")
    return cv2.cvtColor(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3), cv2.COLOR_RGB2BGR)
