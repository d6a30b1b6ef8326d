"""Decode image bytes with OpenCV, refusing decompression bombs.

The image header is read first (with Pillow, which parses headers without
decoding pixels) so that a 50,000 x 50,000 PNG is refused before any pixel
buffer is allocated. GIFs decode their first frame.
"""

from __future__ import annotations

import io

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
        raise MediaDecodeError(f"not a recognised image ({type(exc).__name__}: {exc})") from None


def decode_image(data: bytes, max_pixels: int) -> tuple[str, np.ndarray]:
    """(format, BGR uint8 pixels) of the image (first frame for animations)."""
    fmt, width, height = probe(data)
    if fmt not in CONTENT_TYPES:
        raise MediaDecodeError(f"unsupported image format {fmt}")
    if width * height > max_pixels:
        raise MediaDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if image is None and fmt == "GIF":
        image = _first_gif_frame(data)
    if image is None or image.size == 0:
        raise MediaDecodeError(f"{fmt} image could not be decoded (truncated or corrupt)")
    return fmt, image


def _first_gif_frame(data: bytes) -> np.ndarray | None:
    # OpenCV builds without GIF support return None; fall back to Pillow's first frame.
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            rgb = np.asarray(img.convert("RGB"))
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception:
        return None
