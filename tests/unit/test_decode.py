from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from moderation.errors import MediaDecodeError
from moderation.media.decode import decode_image
from tests.support.images import encode, synthetic_image


def _pil_bytes(fmt: str, **save: object) -> bytes:
    img = Image.fromarray(synthetic_image(1, (120, 160))[:, :, ::-1])
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_supported_formats_decode_to_bgr(fmt):
    got_fmt, pixels = decode_image(_pil_bytes(fmt), 10**8)
    assert got_fmt == fmt
    assert pixels.shape == (120, 160, 3) and pixels.dtype == np.uint8


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    _fmt, pixels = decode_image(buf.getvalue(), 10**8)
    b, g, r = pixels[15, 20]
    assert r > 200 and b < 50  # red first frame, in BGR order


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 100))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 3, "not a recognised image"),
        (b"%PDF-1.7 not an image", "not a recognised image"),
        (_png_header_only(60_000, 60_000), "pixels|implausibly large"),
        (encode(synthetic_image(2))[:200], "could not be decoded|not a recognised"),
    ],
)
def test_bad_media_is_refused_with_a_reason(data, message):
    with pytest.raises(MediaDecodeError, match=message):
        decode_image(data, 50_000_000)


def test_pixel_limit_is_configurable():
    data = encode(synthetic_image(2, (100, 100)), ".png")
    decode_image(data, 10_000)
    with pytest.raises(MediaDecodeError, match="over the limit of 9999"):
        decode_image(data, 9_999)
