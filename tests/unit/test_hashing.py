from __future__ import annotations

import cv2
import numpy as np
import pytest

from moderation.domain import HashSet
from moderation.hashing import crypto, hash_media, pdq
from moderation.media.decode import decode_image
from tests.support.images import encode, reencoded_copy, synthetic_image


def hashes_of(data: bytes) -> HashSet:
    return hash_media(data, decode_image(data, 10**8)[1])


def test_crypto_hashes_are_standard():
    assert crypto.sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert crypto.md5(b"abc") == "900150983cd24fb0d6963f7d28e17f72"


def test_pdq_hex_format_matches_threatexchange_bit_order():
    bits = np.zeros(256, dtype=np.uint8)
    bits[0] = 1  # the first bit is the most significant bit of the first hex digit
    bits[255] = 1
    assert pdq.vector_to_hex(bits) == "8" + "0" * 62 + "1"


def test_pdq_survives_resize_and_recompression_but_separates_different_images():
    img = synthetic_image(3)
    original = hashes_of(encode(img))
    copy = hashes_of(reencoded_copy(img, scale=0.5, quality=60))
    other = hashes_of(encode(synthetic_image(4)))
    assert pdq.is_pdq_hex(original.pdq) and original.pdq_quality >= 50
    assert original.sha256 != copy.sha256
    assert pdq.distance(original.pdq, copy.pdq) <= 16
    assert pdq.distance(original.pdq, other.pdq) > 60


def test_large_images_hash_like_their_downscaled_version():
    big = cv2.resize(synthetic_image(5), (2400, 1800), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(big, (640, 480), interpolation=cv2.INTER_AREA)
    assert pdq.distance(pdq.hash_image(big)[0], pdq.hash_image(small)[0]) <= 10


def test_distance_rejects_malformed_hashes():
    with pytest.raises(ValueError):
        pdq.distance("zz" * 32, "00" * 32)
