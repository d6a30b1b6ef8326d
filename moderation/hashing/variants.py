"""PDQ hashes of an image's likely re-upload edits (pure: pixels -> hashes).

The bank stores one PDQ per image, so a copy that was rotated, mirrored or
letterboxed misses it (PDQ is not rotation invariant, and a black bar of 1% of
the height alone moves the hash by 12..26 bits). Instead the matcher queries
with several hashes of the upload:

- the 8 dihedral transforms (``DIHEDRAL``): ``original``, ``rotate90``,
  ``rotate180``, ``rotate270`` (clockwise, as ``cv2.ROTATE_90_CLOCKWISE``),
  ``flip_horizontal`` (mirror left-right), ``flip_vertical`` (upside down),
  ``transpose`` (about the main diagonal) and ``transverse`` (about the
  anti-diagonal). A name says what was done to the upload's pixels to get that
  hash, so the name that matches is the inverse of the edit the uploader made
  (an upload turned 90 degrees clockwise matches through ``rotate270``).
  They come from one ``pdqhash.compute_dihedral`` call (transforms of the DCT),
  not from hashing 8 turned images. Not bit-exact: PDQ's box-filter
  downsampling is one pixel off-centre, so under an axis flip the hash differs
  from that of the flipped pixels by some bits (always 0 for ``transpose``;
  0..24 on photos, 22..104 on fine textures, a text page and a fundus image).
  Hashing the 4 turned images instead is exact but costs ~2.5x, and on
  re-encoded copies caught 0..3% more (bench, 62 images).
- ``trimmed``: the PDQ of the upload with uniform borders removed
  (``trim_borders``), only when there were any, and with ``dihedral`` also
  ``trimmed_<dihedral>`` for the 7 other transforms of the trimmed image. They
  measurably help: rotated-and-letterboxed copies went from 0% to 89..94% caught,
  with no false match added and no change in the closest unrelated distance.

``bank_hashes`` gives what to store for a new bank entry ("original", and
"trimmed" when the banked image itself has borders), so a bordered bank image
matches a borderless upload too. Dihedral variants are never stored: querying
with them covers both directions.

Contract: ``pdq_variants(img)["original"]`` is exactly ``pdq.hash_image(img)``
(same downscale to 512 px on the longer side, same hex bit order); borders are
looked for on that downscaled image. Variants of one image share the quality of
the image they were computed from: the dihedral ones the original's, the
``trimmed*`` ones the trimmed image's (``pdq_variants_with_quality``).

Cost (bench/robustness.py --timing-only, CPU ms per image, 2 busy cores):
``hash_image`` ~10, ``pdq_variants`` ~12..15 without borders (a border check of a
few rows and one dihedral hash) and ~21 with borders (a second dihedral hash, of
the trimmed image). The matcher's cost grows more: 8 query hashes (16 with
borders) against 1..2 hashes per bank entry is 8..32 Hamming scans per upload.

False matches: every extra query hash is another chance for an unrelated bank
entry to land within the threshold, so the false-match rate can grow by up to
the number of (query, bank) hash pairs, 8..32x. Measured at distance <= 31 on
62 benign images: 0 of 3,782 ordered unrelated pairs and 0 of 94,550 edited
uploads against unrelated bank images matched, with plain PDQ and with the
variants; but the closest unrelated distance fell from 92 (plain) to 66 (with
variants), so the margin shrinks. That sample is far smaller than a production
bank: measure there before auto-removing on a non-"original" match.
"""

from __future__ import annotations

import cv2
import numpy as np
import pdqhash

from moderation.hashing import pdq

# pdqhash.compute_dihedral's output order, named by what was done to the pixels.
# Measured against hashes of actually transformed images (tests/unit/test_variants.py):
# PDQ's "Rotate90" slot is a counter-clockwise turn, its "FlipX" is upside down.
DIHEDRAL: tuple[str, ...] = (
    "original",
    "rotate270",
    "rotate180",
    "rotate90",
    "flip_vertical",
    "flip_horizontal",
    "transpose",
    "transverse",
)
TRIMMED = "trimmed"

# Must equal pdq.hash_image's preprocessing so "original" is its hash exactly.
_MAX_SIDE = 512
# PDQ sees luma only (pdqhash's weights), and in luma JPEG's chroma noise in a
# coloured border vanishes: at quality 50 border pixels stay within 13 levels.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)
# A border line: at least this share of its pixels within tolerance of the
# border luma (JPEG ringing leaves a few outliers next to the picture) ...
_MIN_INLIER_SHARE = 0.95
# ... and its mean within tolerance * this of the border luma.
_MEAN_TOLERANCE_SHARE = 0.5
# Never keep less than this share of a side, nor fewer pixels than _MIN_KEEP_PX.
_MIN_KEEP_SHARE = 0.2
_MIN_KEEP_PX = 24


def pdq_variants(image_bgr: np.ndarray, *, dihedral: bool = True, trim: bool = True) -> dict[str, str]:
    """Variant name -> PDQ hex of a BGR uint8 image; see the module docstring for the names.

    Always contains "original". With ``dihedral`` the 7 other ``DIHEDRAL`` names;
    with ``trim`` "trimmed" (and with both, "trimmed_<name>" for those 7) only when
    ``trim_borders`` removed a border.
    """
    return {
        name: hex_
        for name, (hex_, _) in pdq_variants_with_quality(image_bgr, dihedral=dihedral, trim=trim).items()
    }


def pdq_variants_with_quality(
    image_bgr: np.ndarray, *, dihedral: bool = True, trim: bool = True
) -> dict[str, tuple[str, int]]:
    """Like ``pdq_variants``, with the PDQ quality (0..100) of each hash."""
    small = _downscale(image_bgr)
    out = _hash_all(small, dihedral=dihedral, prefix="")
    if trim:
        trimmed = trim_borders(small)
        if trimmed is not None:
            out.update(_hash_all(trimmed, dihedral=dihedral, prefix=TRIMMED))
    return out


def bank_hashes(image_bgr: np.ndarray) -> dict[str, str]:
    """PDQ hashes to store for a new bank entry: "original", plus "trimmed" if it has borders.

    Query with ``pdq_variants`` of the upload against all of them: a bordered
    upload of a clean bank image matches through the upload's "trimmed", a clean
    upload of a bordered bank image through the bank's "trimmed".
    """
    return pdq_variants(image_bgr, dihedral=False, trim=True)


def apply_dihedral(image: np.ndarray, name: str) -> np.ndarray:
    """The pixels of ``image`` transformed as the variant ``name`` (one of ``DIHEDRAL``) says."""
    transforms = {
        "original": lambda a: a,
        "rotate90": lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
        "rotate180": lambda a: cv2.rotate(a, cv2.ROTATE_180),
        "rotate270": lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
        "flip_horizontal": lambda a: cv2.flip(a, 1),
        "flip_vertical": lambda a: cv2.flip(a, 0),
        "transpose": lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1)),
        "transverse": lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1)[::-1, ::-1]),
    }
    if name not in transforms:
        raise ValueError(f"unknown dihedral transform {name!r}: expected one of {', '.join(DIHEDRAL)}")
    result: np.ndarray = transforms[name](image)
    return result


def trim_borders(image_bgr: np.ndarray, tolerance: int = 16, min_fraction: float = 0.01) -> np.ndarray | None:
    """``image_bgr`` without uniform borders, or None when there is nothing worth trimming.

    A border is a run of rows (top, bottom) or columns (left, right) from the
    edge inward, each of near-constant brightness: at least 95% of its pixels
    within ``tolerance`` luma levels (0..255, PDQ's luma) of the median of the
    outermost line, and its mean within ``tolerance / 2`` of it; any colour
    counts. JPEG noise inside the border passes; the first line with picture
    content stops the trim, and so does a caption or logo drawn on the border.
    Returns None when less than ``min_fraction`` of the area would be removed, or
    when a side is uniform almost to the other edge (a near-blank image, not a
    bordered one): the result keeps at least 20% and 24 px of each dimension.
    The result is a view into ``image_bgr``.
    """
    h, w = image_bgr.shape[:2]
    keep_h = max(_MIN_KEEP_PX, int(np.ceil(_MIN_KEEP_SHARE * h)))
    keep_w = max(_MIN_KEEP_PX, int(np.ceil(_MIN_KEEP_SHARE * w)))
    if h <= keep_h or w <= keep_w:
        return None
    # One pass only: a second pass would start from the picture's own edge and
    # eat into smooth content such as a sky gradient.
    rows = _opposite_borders(image_bgr, keep_h, tolerance)
    if rows is None:
        return None
    top, bottom = rows[0], h - rows[1]
    cols = _opposite_borders(np.swapaxes(image_bgr[top:bottom], 0, 1), keep_w, tolerance)
    if cols is None:
        return None
    left, right = cols[0], w - cols[1]
    removed = 1.0 - (bottom - top) * (right - left) / (h * w)
    if removed < min_fraction:
        return None
    return image_bgr[top:bottom, left:right]


def _opposite_borders(lines: np.ndarray, keep: int, tolerance: int) -> tuple[int, int] | None:
    """Border depths at the start and the end of axis 0, keeping ``keep`` lines; None if it can't."""
    first = _border_depth(lines, lines.shape[0] - keep, tolerance)
    if first is None:
        return None
    last = _border_depth(lines[::-1], lines.shape[0] - keep - first, tolerance)
    return None if last is None else (first, last)


def _border_depth(lines: np.ndarray, limit: int, tolerance: int) -> int | None:
    """How many leading rows of a BGR array are border; None if all ``limit`` of them are.

    Converts to luma only the rows it looks at (most images stop at row 0).
    """
    if limit <= 0:
        return None
    ref = np.median(_luma(lines[:1]))
    depth, chunk = 0, 8
    while depth < limit:
        block = _luma(lines[depth : min(limit, depth + chunk)]) - ref
        inliers = (np.abs(block) <= tolerance).mean(axis=1) >= _MIN_INLIER_SHARE
        mean_ok = np.abs(block.mean(axis=1)) <= tolerance * _MEAN_TOLERANCE_SHARE
        bad = np.flatnonzero(~(inliers & mean_ok))
        if bad.size:
            return depth + int(bad[0])
        depth += block.shape[0]
        chunk *= 2
    return None


def _luma(bgr: np.ndarray) -> np.ndarray:
    return bgr.astype(np.float32) @ _LUMA_BGR


def _downscale(image_bgr: np.ndarray) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    scale = _MAX_SIDE / max(h, w)
    if scale >= 1.0:
        return image_bgr
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)


def _hash_all(image_bgr: np.ndarray, *, dihedral: bool, prefix: str) -> dict[str, tuple[str, int]]:
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    if not dihedral:
        vector, quality = pdqhash.compute(rgb)
        return {prefix or "original": (pdq.vector_to_hex(vector), int(quality))}
    vectors, quality = pdqhash.compute_dihedral(rgb)
    out = {}
    for name, vector in zip(DIHEDRAL, vectors, strict=True):
        key = name if not prefix else prefix if name == "original" else f"{prefix}_{name}"
        out[key] = (pdq.vector_to_hex(vector), int(quality))
    return out
