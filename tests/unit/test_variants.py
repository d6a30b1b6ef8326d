from __future__ import annotations

import cv2
import numpy as np
import pytest

from moderation.hashing import pdq
from moderation.hashing.variants import (
    DIHEDRAL,
    apply_dihedral,
    bank_hashes,
    pdq_variants,
    pdq_variants_with_quality,
    trim_borders,
)
from tests.support.images import synthetic_image

MATCH = 31  # the service's PDQ match distance


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert ok and decoded is not None
    return decoded


def bordered(
    img: np.ndarray, top: int, bottom: int, left: int, right: int, color: tuple[int, ...]
) -> np.ndarray:
    return cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)


# -- dihedral variants -------------------------------------------------------------------
def test_rotating_90_clockwise_is_found_under_rotate90():
    img = synthetic_image(1)
    variants = pdq_variants(img, trim=False)
    rotated = pdq.hash_image(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE))[0]
    nearest = min(variants, key=lambda name: pdq.distance(variants[name], rotated))
    assert nearest == "rotate90"
    assert pdq.distance(variants["rotate90"], rotated) <= 10


@pytest.mark.parametrize("seed", [0, 2])
def test_each_dihedral_variant_is_the_hash_of_those_pixels_transformed(seed: int):
    # compute_dihedral works on the DCT; PDQ's box-filter downsampling is off by one
    # pixel under an axis flip, so hashes of flipped pixels differ by a few bits
    # (0..22 measured), against ~128 for a wrong transform.
    img = synthetic_image(seed)
    variants = pdq_variants(img, trim=False)
    independent = {
        "original": img,
        "rotate90": cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
        "rotate180": cv2.rotate(img, cv2.ROTATE_180),
        "rotate270": cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
        "flip_horizontal": img[:, ::-1].copy(),
        "flip_vertical": img[::-1].copy(),
        "transpose": np.ascontiguousarray(img.transpose(1, 0, 2)),
        "transverse": np.ascontiguousarray(img.transpose(1, 0, 2)[::-1, ::-1]),
    }
    assert set(variants) == set(DIHEDRAL) == set(independent)
    for name, pixels in independent.items():
        assert np.array_equal(apply_dihedral(img, name), pixels), name
        actual = pdq.hash_image(pixels)[0]
        d = {other: pdq.distance(h, actual) for other, h in variants.items()}
        assert d[name] <= 24, (name, d)
        assert min(v for k, v in d.items() if k != name) > 80, (name, d)
    assert variants["transpose"] == pdq.hash_image(independent["transpose"])[0]


def test_a_rotated_upload_matches_the_banked_original_through_the_inverse_variant():
    img = synthetic_image(4)
    banked = pdq.hash_image(img)[0]
    upload = jpeg(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), 70)
    variants = pdq_variants(upload)
    assert pdq.distance(pdq.hash_image(upload)[0], banked) > MATCH
    assert pdq.distance(variants["rotate270"], banked) <= MATCH


@pytest.mark.parametrize("size", [(480, 640), (300, 451), (1500, 2000), (2001, 333)])
def test_original_variant_is_exactly_hash_image(size: tuple[int, int]):
    img = cv2.resize(synthetic_image(6), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    expected, quality = pdq.hash_image(img)
    assert pdq_variants(img)["original"] == expected
    assert pdq_variants(img, dihedral=False, trim=False) == {"original": expected}
    assert pdq_variants_with_quality(img)["original"] == (expected, quality)


def test_apply_dihedral_rejects_unknown_names():
    with pytest.raises(ValueError, match="rotate90"):
        apply_dihedral(synthetic_image(1), "rotate45")


# -- trimming ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("borders", "color", "quality"),
    [
        ((72, 72, 0, 0), (0, 0, 0), None),  # letterbox
        ((72, 72, 0, 0), (0, 0, 0), 50),
        ((0, 0, 96, 96), (0, 0, 0), 50),  # pillarbox
        ((48, 48, 64, 64), (255, 255, 255), 50),  # padding
        ((30, 30, 40, 40), (40, 140, 230), 50),  # coloured frame
        ((60, 0, 0, 25), (90, 90, 90), 70),  # uneven grey padding
    ],
)
def test_trim_removes_uniform_borders_and_stops_at_the_picture(borders, color, quality):
    img = synthetic_image(3)
    framed = bordered(img, *borders, color)
    if quality:
        framed = jpeg(framed, quality)
    trimmed = trim_borders(framed)
    assert trimmed is not None
    assert abs(trimmed.shape[0] - img.shape[0]) <= 2 and abs(trimmed.shape[1] - img.shape[1]) <= 2
    if quality is None:
        assert np.array_equal(trimmed, img)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trim_returns_none_without_borders(seed: int):
    img = synthetic_image(seed)
    assert trim_borders(img) is None
    assert trim_borders(jpeg(img, 50)) is None
    assert set(pdq_variants(img)) == set(DIHEDRAL)
    assert list(bank_hashes(img)) == ["original"]


def test_trim_ignores_a_negligible_border_and_never_returns_a_tiny_image():
    img = synthetic_image(5)
    assert trim_borders(bordered(img, 1, 1, 1, 1, (0, 0, 0))) is None  # < min_fraction of the area
    blank = np.zeros((400, 400, 3), np.uint8)
    assert trim_borders(blank) is None
    blank[190:210, 190:210] = 255  # a speck on a blank canvas is not a bordered picture
    assert trim_borders(blank) is None
    assert trim_borders(np.zeros((10, 10, 3), np.uint8)) is None


def test_trim_keeps_content_of_the_border_colour_inside_the_picture():
    img = synthetic_image(7)
    img[200:260, :] = 0  # a black stripe across the picture, not at its edge
    framed = bordered(img, 50, 50, 0, 0, (0, 0, 0))
    trimmed = trim_borders(framed)
    assert trimmed is not None and np.array_equal(trimmed, img)


# -- matching through the trimmed variants -------------------------------------------------------
def test_a_letterboxed_copy_matches_only_through_trimmed():
    img = synthetic_image(8)
    banked = bank_hashes(img)
    upload = jpeg(bordered(img, 72, 72, 0, 0, (0, 0, 0)), 70)
    variants = pdq_variants(upload)
    assert pdq.distance(variants["original"], banked["original"]) > MATCH
    assert pdq.distance(variants["trimmed"], banked["original"]) <= MATCH


def test_a_rotated_and_letterboxed_copy_matches_through_a_trimmed_dihedral_variant():
    img = synthetic_image(9)
    banked = pdq.hash_image(img)[0]
    upload = bordered(cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), 96, 96, 0, 0, (0, 0, 0))
    variants = pdq_variants(upload)
    assert pdq.distance(variants["trimmed"], banked) > MATCH
    assert pdq.distance(variants["trimmed_rotate270"], banked) <= MATCH
    assert pdq_variants(upload, dihedral=False).keys() == {"original", "trimmed"}


def test_bank_hashes_of_a_bordered_image_match_a_clean_upload():
    img = synthetic_image(10)
    banked = bank_hashes(bordered(img, 40, 40, 40, 40, (255, 255, 255)))
    assert list(banked) == ["original", "trimmed"]
    upload = pdq.hash_image(jpeg(img, 70))[0]
    assert pdq.distance(upload, banked["original"]) > MATCH
    assert pdq.distance(upload, banked["trimmed"]) <= MATCH
