from __future__ import annotations

import cv2
import numpy as np
import pytest

from moderation.domain import BankAction, HashSet
from moderation.hashing import crypto, hash_media, pdq
from moderation.hashing.index import BankIndex, IndexEntry
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


def _entry(i: int, signal: str, value: str, bank: str = "b", action: BankAction = BankAction.AUTO_REMOVE):
    return IndexEntry(i, bank, action, signal, value)


def test_index_matches_exact_and_near_hashes_best_first():
    target = hashes_of(encode(synthetic_image(10)))
    near = hashes_of(reencoded_copy(synthetic_image(10)))
    far = hashes_of(encode(synthetic_image(11)))
    index = BankIndex(pdq_match_distance=31)
    index.add(
        [
            _entry(1, "sha256", target.sha256, "victims"),
            _entry(2, "pdq", near.pdq, "confirmed"),
            _entry(3, "pdq", far.pdq, "other"),
            _entry(4, "md5", "0" * 32, "junk"),
        ]
    )
    found = index.match(target)
    assert [(m.bank, m.signal) for m in found] == [("victims", "sha256"), ("confirmed", "pdq")]
    assert found[0].distance == 0 and 0 < found[1].distance <= 31
    assert index.match(far)[0].bank == "other"


def test_index_threshold_is_inclusive_and_configurable():
    base = "0" * 64
    at_31 = "f" * 7 + "7" + "0" * 56  # 31 bits set
    assert pdq.distance(base, at_31) == 31
    hs = HashSet(sha256="s", md5="m", pdq=base, pdq_quality=100)
    index = BankIndex(pdq_match_distance=31)
    index.add([_entry(1, "pdq", at_31)])
    assert len(index.match(hs)) == 1
    strict = BankIndex(pdq_match_distance=30)
    strict.add([_entry(1, "pdq", at_31)])
    assert strict.match(hs) == []


def test_index_add_is_idempotent_by_entry_id():
    index = BankIndex()
    entries = [_entry(5, "sha256", "a"), _entry(6, "pdq", "0" * 64)]
    assert index.add(entries) == 2
    assert index.add(entries) == 0
    assert len(index) == 2 and index.last_entry_id == 6


def test_a_malformed_bank_entry_is_skipped_not_fatal():
    good = hashes_of(encode(synthetic_image(12)))
    index = BankIndex()
    added = index.add([_entry(1, "pdq", "not-a-hash"), _entry(2, "pdq", good.pdq)])
    assert added == 1 and index.last_entry_id == 2
    assert [m.entry_id for m in index.match(good)] == [2]
