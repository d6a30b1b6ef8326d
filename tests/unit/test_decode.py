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


def _big_jpeg(width: int, height: int) -> tuple[np.ndarray, bytes]:
    import cv2

    image = cv2.resize(synthetic_image(5), (width, height), interpolation=cv2.INTER_CUBIC)
    return image, encode(image)


def test_large_jpegs_decode_at_reduced_scale_keeping_the_shorter_side():
    from moderation.hashing import hash_media

    image, data = _big_jpeg(3200, 2400)
    _fmt, full = decode_image(data, 10**8)
    _fmt, reduced = decode_image(data, 10**8, min_side=768)
    assert full.shape == (2400, 3200, 3)
    assert reduced.shape == (1200, 1600, 3)  # 1/2; 1/4 would leave 600 < 768
    # The hash barely moves: a bank match stays a match.
    a, b = hash_media(data, full), hash_media(data, reduced)
    distance = bin(int(a.pdq, 16) ^ int(b.pdq, 16)).count("1")
    assert distance <= 8, distance


def test_a_jpeg_over_the_pixel_limit_is_decoded_smaller_instead_of_refused():
    _image, data = _big_jpeg(2000, 1600)  # 3.2 Mpx
    _fmt, pixels = decode_image(data, max_pixels=1_000_000)
    assert pixels.shape[0] * pixels.shape[1] <= 1_000_000
    assert pixels.shape == (800, 1000, 3)
    with pytest.raises(MediaDecodeError, match="over the limit"):
        decode_image(data, max_pixels=40_000)  # even 1/8 (250x200) is too many


def test_small_and_non_jpeg_images_decode_at_full_size():
    png = encode(synthetic_image(6, (1800, 2400)), ".png")
    assert decode_image(png, 10**8, min_side=768)[1].shape == (1800, 2400, 3)
    _image, jpeg = _big_jpeg(1200, 900)  # 1/2 would leave 450 < 768
    assert decode_image(jpeg, 10**8, min_side=768)[1].shape == (900, 1200, 3)


def _animation(fmt: str, colours: list[tuple[int, int, int]]) -> bytes:
    frames = [Image.new("RGB", (40, 30), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_give_frames_spread_over_the_animation(fmt):
    from moderation.media.load import MediaLimits, load_media

    colours = [(255, 0, 0)] + [(0, 100 + 10 * i, 0) for i in range(8)] + [(0, 0, 255)]  # distinct frames
    media = load_media(_animation(fmt, colours), MediaLimits())
    assert media.kind == "animation" and len(media.pictures) == 4
    first, last = media.pictures[0][15, 20], media.pictures[-1][15, 20]
    assert first[2] > 200 and first[0] < 50  # red first frame (BGR)
    assert last[0] > 200 and last[2] < 50  # blue last frame


def test_a_still_gif_is_an_image():
    from moderation.media.load import MediaLimits, load_media

    media = load_media(_animation("GIF", [(255, 0, 0)]), MediaLimits())
    assert media.kind == "image" and len(media.pictures) == 1
