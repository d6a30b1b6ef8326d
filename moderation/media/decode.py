"""Decode image bytes with OpenCV, refusing decompression bombs.

The image header is read first (with Pillow, which parses headers without
decoding pixels) so that a 50,000 x 50,000 PNG is refused before any pixel
buffer is allocated. Large JPEGs are decoded at 1/2, 1/4 or 1/8 scale inside
the JPEG decoder (DCT scaling, a proper low-pass), as far as the shorter side
stays at least ``min_side``: the classifier needs at most 299 px and PDQ 64 px,
and a 12-megapixel photo decodes and hashes about eight times faster. No image
is ever decoded to more than ``max_pixels`` pixels. Animated GIF and WebP give a
few frames spread over the animation.
"""

from __future__ import annotations

import io
import re

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
REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
ANIMATION_SCAN_FRAMES = 240  # frames sampled from the first this many (seeking decodes each one)


def probe(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header, without decoding pixels."""
    if not data:
        raise MediaDecodeError("media is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return str(img.format), int(img.width), int(img.height)
    except Image.DecompressionBombError as exc:
        raise MediaDecodeError(f"image dimensions are implausibly large: {exc}") from None
    except Exception as exc:  # Pillow raises many types for junk input
        detail = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))  # no memory addresses
        raise MediaDecodeError(f"not a recognised image ({type(exc).__name__}: {detail})") from None


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
    fmt, width, height = probe(data)
    if fmt not in CONTENT_TYPES:
        raise MediaDecodeError(f"unsupported image format {fmt}")
    factor = jpeg_scale(width, height, max_pixels, min_side) if fmt == "JPEG" else 1
    if factor == 0 or (factor == 1 and width * height > max_pixels):
        raise MediaDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, REDUCED_FLAGS.get(factor, cv2.IMREAD_COLOR))
    if image is None and fmt == "GIF":
        frames = _pil_frames(data, 1)
        image = frames[0] if frames else None
    if image is None or image.size == 0:
        raise MediaDecodeError(f"{fmt} image could not be decoded (truncated or corrupt)")
    return fmt, image


def animation_frames(
    data: bytes, fmt: str, width: int, height: int, count: int, max_pixels: int
) -> list[np.ndarray]:
    """Up to ``count`` frames spread over an animated GIF or WebP (first frame
    included); [] for a still image. Frames decoded in total stay within
    ``ANIMATION_SCAN_FRAMES`` and ``count * max_pixels`` pixels."""
    if fmt not in {"GIF", "WEBP"} or count < 2:
        return []
    try:
        with Image.open(io.BytesIO(data)) as img:
            total = int(getattr(img, "n_frames", 1))
    except Exception:
        return []
    if total < 2:
        return []
    budget = max(1, min(total, ANIMATION_SCAN_FRAMES, (count * max_pixels) // max(width * height, 1)))
    return _pil_frames(data, count, budget)


def _pil_frames(data: bytes, count: int, scan: int = 1) -> list[np.ndarray]:
    """``count`` evenly spread frames among the first ``scan`` (Pillow decodes
    frames in order, so seeking to frame k decodes all before it)."""
    wanted = sorted({round(i * (scan - 1) / max(count - 1, 1)) for i in range(count)}) if scan > 1 else [0]
    frames: list[np.ndarray] = []
    try:
        with Image.open(io.BytesIO(data)) as img:
            for index in wanted:
                img.seek(index)
                rgb = np.asarray(img.convert("RGB"))
                frames.append(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except Exception:
        pass  # a truncated animation keeps the frames decoded so far
    return frames
