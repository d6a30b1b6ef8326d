"""Hostile media for tests and the decode fuzzer: bombs, truncations, polyglots.

Everything is synthetic and built byte by byte (or from tests/support/images.py
pictures): decompression bombs declare huge pictures with tiny bodies, polyglots
glue a benign image to a ZIP, HTML or PDF. Nothing here is a real photo.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image

from tests.support.images import encode, synthetic_image

# -- valid seeds ------------------------------------------------------------------------


def pil_bytes(fmt: str, size: tuple[int, int] = (96, 128), seed: int = 1, **save: object) -> bytes:
    """A synthetic picture (height, width = ``size``) saved by Pillow as ``fmt``."""
    h, w = size
    picture = synthetic_image(seed, (max(h, 64), max(w, 64)))[:h, :w]  # its shapes need >= 64 px
    img = Image.fromarray(np.ascontiguousarray(picture[:, :, ::-1]))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def animation_bytes(fmt: str, frames: int = 6, size: tuple[int, int] = (32, 48)) -> bytes:
    """An animated GIF or WebP of ``frames`` distinct flat colours."""
    w, h = size[1], size[0]
    pictures = [Image.new("RGB", (w, h), (20 * i % 256, 255 - 30 * i % 256, 90)) for i in range(frames)]
    buf = io.BytesIO()
    pictures[0].save(buf, format=fmt, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    return buf.getvalue()


@lru_cache(maxsize=1)
def seed_files() -> dict[str, bytes]:
    """One small valid file per supported container (videos are 2 s, 64x80)."""
    from tests.support.videos import synthetic_video

    return {
        "jpeg": encode(synthetic_image(1, (96, 128)), ".jpg"),
        "jpeg_progressive": pil_bytes("JPEG", progressive=True, quality=85),
        "png": encode(synthetic_image(2, (96, 128)), ".png"),
        "gif": pil_bytes("GIF"),
        "gif_animated": animation_bytes("GIF"),
        "webp": pil_bytes("WEBP", quality=80),
        "webp_animated": animation_bytes("WEBP"),
        "bmp": pil_bytes("BMP", size=(32, 48)),
        "tiff": pil_bytes("TIFF", size=(32, 48), compression="tiff_deflate"),
        "mp4": synthetic_video(None, seed=3, seconds=2, fps=5, size=(64, 80), ext=".mp4"),
        "webm": synthetic_video(None, seed=3, seconds=2, fps=5, size=(64, 80), ext=".webm"),
    }


# -- byte-level helpers -----------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset, segment length incl. the 2 length bytes) up to the first SOS."""
    out: list[tuple[int, int, int]] = []
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, i, length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def jpeg_with_size(width: int, height: int, progressive: bool = False, subsampling: int = 2) -> bytes:
    """A tiny JPEG (64x64 of pixel data) whose SOF claims ``width`` x ``height``."""
    data = bytearray(pil_bytes("JPEG", (64, 64), progressive=progressive, subsampling=subsampling))
    for marker, offset, _length in jpeg_segments(bytes(data)):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[offset + 5 : offset + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A progressive JPEG of ``scans`` (nearly empty) scans: each one makes the
    decoder walk every block of a ``width`` x ``height`` picture again."""
    data = jpeg_with_size(width, height, progressive=True, subsampling=0)
    sos = data.index(b"\xff\xda")
    length = struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    first = data[sos : sos + 2 + length]  # DC first scan of all components
    refine = bytearray(first)
    refine[-1] = 0x10  # Ah=1, Al=0: DC refinement
    return data[:sos] + first + b"\0" * 8 + (bytes(refine) + b"\0" * 8) * scans + b"\xff\xd9"


def jpeg_with_app_segments(marker: int, payload: bytes, count: int) -> bytes:
    """A small valid JPEG with ``count`` APPn/COM segments of ``payload`` (<= 65533 bytes) after SOI."""
    jpeg = pil_bytes("JPEG", (64, 64))
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment * count + jpeg[2:]


def huge_exif(entries: int = 5000) -> bytes:
    """An APP1 Exif payload: a TIFF IFD with ``entries`` entries, each pointing at
    (absent) data 4 GB away, and a next-IFD pointer looping back to itself."""
    ifd = struct.pack("<H", entries)
    for tag in range(entries):
        ifd += struct.pack("<HHII", 0x8000 + tag % 0x7000, 7, 0xFFFFFFF0, 0xFFFFFF00)  # UNDEFINED, huge
    ifd += struct.pack("<I", 8)  # next IFD = this one again
    payload = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd
    return payload[:65533]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_size(
    width: int, height: int, idat: bytes | None = None, depth: int = 8, colour: int = 2
) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = zlib.compress(b"\0" * 100) if idat is None else idat
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")
    )


def png_declaring_chunk(kind: bytes, length: int) -> bytes:
    """A PNG cut short right after a ``kind`` chunk header that declares ``length``
    bytes (what bench/fuzz_decode.py found: 48 bytes, IDAT declaring 3.4 GB)."""
    ihdr = struct.pack(">IIBBBBB", 128, 96, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + struct.pack(">I", length) + kind + b"\x1f'9txtn"


@lru_cache(maxsize=4)
def zeros_deflate(total: int, block: int = 1 << 20) -> bytes:
    """A zlib stream that inflates to ``total`` zero bytes (about 1 KB per MB):
    one fully flushed block of zeros, repeated, so building it costs almost nothing."""
    comp = zlib.compressobj(9)
    piece = comp.compress(b"\0" * block) + comp.flush(zlib.Z_FULL_FLUSH)
    repeats, rest = divmod(total, block)
    header = piece[:2]  # zlib header comes with the first piece
    body = piece[2:]
    adler = 1
    zero_block = b"\0" * block
    for _ in range(repeats):
        adler = zlib.adler32(zero_block, adler)
    tail_comp = zlib.compressobj(9)
    tail = tail_comp.compress(b"\0" * rest) + tail_comp.flush(zlib.Z_FINISH)
    # Raw deflate of the tail: strip its zlib header and trailer, end with our own Adler-32.
    adler = zlib.adler32(b"\0" * rest, adler)
    raw_tail = tail[2:-4]
    return header + body * repeats + raw_tail + struct.pack(">I", adler)


def png_zlib_bomb(width: int, height: int, inflated: int) -> bytes:
    """A PNG of ``width`` x ``height`` whose IDAT inflates to ``inflated`` bytes
    (far more than the picture needs when ``inflated`` is large)."""
    return png_with_size(width, height, idat=zeros_deflate(inflated))


def png_with_chunk(kind: bytes, data: bytes, size: tuple[int, int] = (48, 64)) -> bytes:
    """A valid PNG with an extra chunk before IDAT."""
    png = encode(synthetic_image(3, size), ".png")
    at = 8 + 25  # after the signature and IHDR
    return png[:at] + png_chunk(kind, data) + png[at:]


def _gif_lzw_one_pixel() -> bytes:
    img = Image.new("P", (1, 1), 0)
    img.putpalette([0, 0, 0, 255, 255, 255])
    buf = io.BytesIO()
    img.save(buf, format="GIF")
    data = buf.getvalue()
    start = data.index(b",")  # image descriptor
    return data[start + 10 : -1]  # LZW minimum code size, sub-blocks, terminator


def gif_bomb(screen: tuple[int, int], frame: tuple[int, int], frames: int = 1) -> bytes:
    """A GIF with a ``screen`` (width, height) logical screen and ``frames`` frames of
    ``frame`` (width, height) declared size, each with a one-pixel LZW body."""
    lzw = _gif_lzw_one_pixel()
    out = b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for _ in range(frames):
        out += b"!\xf9\x04\x04\x0a\x00\x00\x00"  # graphic control: 0.1 s, disposal 1
        out += b"," + struct.pack("<HHHHB", 0, 0, frame[0], frame[1], 0) + lzw
    return out + b";"


def webp_vp8x_with_size(width: int, height: int, animated: bool = False) -> bytes:
    """A WebP with a VP8X header claiming a ``width`` x ``height`` canvas and a tiny body."""
    small = pil_bytes("WEBP", (16, 16), lossless=True)
    vp8l = small[12:]  # the VP8L chunk of a simple file
    flags = 0x02 if animated else 0
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8l_with_size(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims ``width`` x ``height`` (max 16384)."""
    data = bytearray(pil_bytes("WEBP", (16, 16), lossless=True))
    # VP8L: signature byte 0x2f at 20, then 14 bits width-1, 14 bits height-1, ...
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    data[21:25] = bits.to_bytes(4, "little")
    return bytes(data)


def tiff_with_size(width: int, height: int, tile: tuple[int, int] | None = None, pages: int = 1) -> bytes:
    """A little-endian TIFF claiming ``width`` x ``height`` 8-bit RGB with one tiny
    strip (or tile of ``tile`` size); ``pages`` IFDs chained (the last loops to the first)."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample (one value for all samples)
        (259, 3, 1, 8),  # Compression: deflate
        (262, 3, 1, 2),  # RGB
        (277, 3, 1, 3),  # SamplesPerPixel
        (284, 3, 1, 1),  # PlanarConfiguration: chunky
    ]
    strip = zlib.compress(b"\0" * 64)
    if tile is None:
        entries += [(273, 4, 1, 0), (278, 4, 1, height), (279, 4, 1, len(strip))]
    else:
        entries += [(322, 4, 1, tile[0]), (323, 4, 1, tile[1]), (324, 4, 1, 0), (325, 4, 1, len(strip))]
    entries.sort()
    ifd_size = 2 + 12 * len(entries) + 4
    data_at = 8 + ifd_size * pages
    out = b"II*\0" + struct.pack("<I", 8)
    for page in range(pages):
        ifd = struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            if tag in (273, 324):
                value = data_at
            packed = struct.pack("<HHI", tag, kind, count)
            packed += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
            ifd += packed
        following = 8 + ifd_size * (page + 1) if page + 1 < pages else (8 if pages > 1 else 0)
        out += ifd + struct.pack("<I", following)
    return out + strip


# -- polyglots and look-alikes ------------------------------------------------------------


def zip_bytes(name: str = "payload.txt", content: bytes = b"not an image") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, content)
    return buf.getvalue()


def jpeg_zip_polyglot() -> bytes:
    """A JPEG followed by a ZIP archive: both a valid JPEG and a valid ZIP."""
    return pil_bytes("JPEG", (64, 64)) + zip_bytes()


def gifar() -> bytes:
    """A GIF with a Java archive (a ZIP with a manifest) appended."""
    return pil_bytes("GIF", (32, 32)) + zip_bytes("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\n")


def jpeg_html_polyglot() -> bytes:
    """A JPEG whose comment segment is an HTML document with a script."""
    html = b"<html><body><script>alert(document.domain)</script></body></html>"
    return jpeg_with_app_segments(0xFE, html, 1)


def jpeg_pdf_polyglot() -> bytes:
    """A JPEG with a PDF header in its first kilobyte (PDF readers look there)."""
    pdf = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    return jpeg_with_app_segments(0xFE, pdf, 1) + b"\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def html_then_jpeg() -> bytes:
    """An HTML page with JPEG bytes after it (a browser would render HTML)."""
    return b"<!DOCTYPE html><html><img src=x onerror=alert(1)></html>\n" + pil_bytes("JPEG", (32, 32))


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
    b'<script>alert(1)</script><rect width="100" height="100"/></svg>'
)
HTML = b"<!doctype html><html><head><title>x</title></head><body>hello</body></html>"
PDF = b"%PDF-1.7\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


# -- videos -----------------------------------------------------------------------------


def mp4_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the top-level boxes of an MP4."""
    out: list[tuple[bytes, int, int]] = []
    i = 0
    while i + 8 <= len(data):
        size = struct.unpack(">I", data[i : i + 4])[0]
        kind = data[i + 4 : i + 8]
        if size == 1 and i + 16 <= len(data):
            size = struct.unpack(">Q", data[i + 8 : i + 16])[0]
        if size < 8:
            break
        out.append((kind, i, size))
        i += size
    return out


def mp4_broken_moov(data: bytes, how: str) -> bytes:
    """An MP4 with its ``moov`` box damaged: ``zero`` (contents zeroed), ``huge``
    (size says 4 GB), ``missing`` (removed), ``garbage`` (contents replaced by 0xAB)."""
    boxes = {kind: (offset, size) for kind, offset, size in mp4_boxes(data)}
    offset, size = boxes[b"moov"]
    if how == "zero":
        return data[: offset + 8] + b"\0" * (size - 8) + data[offset + size :]
    if how == "garbage":
        return data[: offset + 8] + b"\xab" * (size - 8) + data[offset + size :]
    if how == "huge":
        return data[:offset] + struct.pack(">I", 0xFFFFFFF0) + data[offset + 4 :]
    if how == "missing":
        return data[:offset] + data[offset + size :]
    raise ValueError(how)


def mp4_with_size(data: bytes, width: int, height: int) -> bytes:
    """An MP4 whose track header and sample description claim ``width`` x ``height``."""
    out = bytearray(data)
    at = out.find(b"tkhd")
    if at > 0:
        version = out[at + 4]
        wh = at + 4 + (88 if version == 1 else 76)
        out[wh : wh + 8] = struct.pack(">II", width << 16, height << 16)
    at = out.find(b"mp4v")
    if at > 0:  # VisualSampleEntry: 6 reserved + 2 index + 16 predefined, then width, height
        out[at + 4 + 24 : at + 4 + 28] = struct.pack(">HH", width & 0xFFFF, height & 0xFFFF)
    return bytes(out)


def webm_with_garbage(data: bytes, keep: int = 64, garbage: int = 4096) -> bytes:
    """The EBML header of a WebM followed by bytes that are no Matroska element."""
    return data[:keep] + bytes((i * 37 + 11) % 256 for i in range(garbage))


def webm_with_size(data: bytes, width: int, height: int) -> bytes:
    """A WebM whose PixelWidth/PixelHeight elements (2-byte values) claim a new size."""
    out = bytearray(data)
    for element, value in ((b"\xb0\x82", width), (b"\xba\x82", height)):
        at = out.find(element)
        if at > 0:
            out[at + 2 : at + 4] = struct.pack(">H", value & 0xFFFF)
    return bytes(out)


def gif_image_data(size: tuple[int, int]) -> bytes:
    """LZW minimum code size, data sub-blocks and terminator of a solid ``size``
    (width, height) frame, as Pillow encodes it."""
    img = Image.new("P", size, 1)
    img.putpalette([0, 0, 0, 200, 30, 90] + [0] * 762)
    buf = io.BytesIO()
    img.save(buf, format="GIF")
    data = buf.getvalue()
    i = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)
    while data[i] == 0x21:  # extensions: label, then sub-blocks
        i += 2
        while data[i]:
            i += 1 + data[i]
        i += 1
    assert data[i] == 0x2C
    flags = data[i + 9]
    i += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    return data[i:-1]


def gif_frames(screen: tuple[int, int], frames: list[tuple[int, int, int, int, bool]]) -> bytes:
    """A GIF of ``frames``: (left, top, width, height, transparent), each a valid
    solid picture of its size; transparent frames carry a 4-colour local palette."""
    out = b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], 0x80, 0, 0) + b"\0\0\0\xc8\x1e\x5a"
    out += b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for left, top, width, height, transparent in frames:
        out += b"!\xf9\x04" + (b"\x01\x0a\x00\x01" if transparent else b"\x00\x0a\x00\x00") + b"\x00"
        out += b"," + struct.pack("<HHHH", left, top, width, height)
        out += (b"\x81" + bytes([0, 0, 0, 200, 30, 90, 10, 200, 10, 0, 0, 0])) if transparent else b"\x00"
        out += gif_image_data((width, height))
    return out + b";"


def gif_animation_bomb(size: tuple[int, int], frames: int) -> bytes:
    """An animated GIF of ``frames`` full, valid frames of ``size`` (width, height):
    one solid frame encoded once (a few KB), repeated."""
    img = Image.new("P", size, 1)
    img.putpalette([0, 0, 0, 200, 30, 90] + [0] * 762)
    buf = io.BytesIO()
    img.save(buf, format="GIF")
    data = buf.getvalue()
    start = data.index(b",")
    head, frame = data[:start], data[start:-1]
    head = head[:13] + head[13 : 13 + 768]  # header, screen descriptor, global palette
    gce = b"!\xf9\x04\x00\x0a\x00\x00\x00"
    return head + b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" + (gce + frame) * frames + b";"


@lru_cache(maxsize=4)
def _vp8l_solid(size: tuple[int, int]) -> bytes:
    """The VP8L chunk (header included) of a solid lossless WebP of ``size``: a few dozen bytes."""
    buf = io.BytesIO()
    Image.new("RGB", size, (50, 120, 200)).save(buf, format="WEBP", lossless=True, method=0)
    data = buf.getvalue()
    at = data.index(b"VP8L")
    return data[at:]


def webp_animation_bomb(size: tuple[int, int], frames: int) -> bytes:
    """An animated WebP of ``frames`` full-canvas solid frames of ``size`` (width,
    height), built chunk by chunk: about 60 bytes per frame whatever the size."""
    w, h = size
    frame = _vp8l_solid(size)
    anmf_payload = bytes(6) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    anmf_payload += (40).to_bytes(3, "little") + b"\x02" + frame  # 40 ms, no blending
    anmf = b"ANMF" + struct.pack("<I", len(anmf_payload)) + anmf_payload + b"\0" * (len(anmf_payload) % 2)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x12, 0, 0, 0])
    vp8x += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    anim = b"ANIM" + struct.pack("<I", 6) + bytes(4) + struct.pack("<H", 0)
    body = b"WEBP" + vp8x + anim + anmf * frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -- mutation fuzzing -------------------------------------------------------------------

MUTATIONS = ("flip", "byte", "truncate", "splice", "insert", "delete", "repeat", "field")
INTERESTING = (
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    60000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
)
_FIELD_MARKERS = (
    (b"IHDR", 4, ">I"),  # PNG width, height
    (b"\xff\xc0", 5, ">H"),  # JPEG SOF0 height, width
    (b"\xff\xc2", 5, ">H"),  # JPEG SOF2
    (b"\xff\xda", 2, ">H"),  # JPEG SOS length
    (b"\xff\xc4", 2, ">H"),  # JPEG DHT length
    (b"GIF89a", 0, "<H"),  # GIF screen width, height
    (b",\0\0\0\0", 5, "<H"),  # GIF frame size
    (b"VP8X", 12, "<H"),  # WebP canvas
    (b"VP8 ", 14, "<H"),  # WebP VP8 frame size
    (b"ANMF", 14, "<H"),  # WebP animation frame
    (b"BM", 18, "<I"),  # BMP width, height
    (b"II*\0", 4, "<I"),  # TIFF first IFD offset
    (b"moov", -4, ">I"),  # MP4 box sizes
    (b"trak", -4, ">I"),
    (b"stsz", 8, ">I"),
    (b"stco", 8, ">I"),
    (b"tkhd", 76, ">I"),
    (b"mdat", -4, ">I"),
    (b"\x1a\x45\xdf\xa3", 4, ">B"),  # EBML header size
    (b"\xb0\x82", 2, ">H"),  # Matroska PixelWidth
    (b"\xba\x82", 2, ">H"),  # Matroska PixelHeight
)


def field_offsets(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of header fields worth editing: sizes, lengths, counts."""
    out: list[tuple[int, str]] = []
    for marker, delta, fmt in _FIELD_MARKERS:
        at = data.find(marker)
        while at >= 0 and len(out) < 64:
            offset = at + len(marker) + delta if delta >= 0 else at + delta
            for extra in (0, struct.calcsize(fmt)):
                if 0 <= offset + extra and offset + extra + struct.calcsize(fmt) <= len(data):
                    out.append((offset + extra, fmt))
            at = data.find(marker, at + 1)
    return out


def mutate(data: bytes, other: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    """Apply ``ops`` (name, a, b: two arbitrary non-negative numbers that pick
    positions and values) to ``data``; ``other`` is the file spliced in."""
    out = bytearray(data)
    for name, a, b in ops:
        size = len(out)
        if name == "flip" and size:
            out[a % size] ^= 1 << (b % 8)
        elif name == "byte" and size:
            out[a % size] = INTERESTING[b % len(INTERESTING)] & 0xFF if b % 2 else b % 256
        elif name == "truncate":
            out = out[: a % (size + 1)]
        elif name == "splice" and other:
            out = out[: a % (size + 1)] + bytearray(other[b % len(other) :])
        elif name == "insert":
            chunk = (
                bytes([b % 256]) * (1 + a % 64) if b % 3 else other[a % max(len(other), 1) :][: 1 + b % 4096]
            )
            at = a % (size + 1)
            out[at:at] = chunk
        elif name == "delete" and size:
            at = a % size
            del out[at : at + 1 + b % 256]
        elif name == "repeat" and size:
            at = a % size
            piece = out[at : at + 1 + b % 512]
            out[at:at] = piece * (1 + b % 8)
        elif name == "field":
            fields = field_offsets(bytes(out))
            if fields:
                offset, fmt = fields[a % len(fields)]
                width = struct.calcsize(fmt)
                value = INTERESTING[b % len(INTERESTING)] & ((1 << (8 * width)) - 1)
                out[offset : offset + width] = struct.pack(fmt, value)
    return bytes(out)
