"""The pure parts of near-duplicate grouping: lookup keys (multi-index hashing),
the entry key, similarity, and the summary a moderator reads."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moderation import review
from moderation.hashing import pdq
from moderation.review_groups import HELD, OTHER_QUEUE, GroupDecision
from moderation.storage import groups
from tests.support.factories import make_item

POLICY = groups.GroupPolicy(pdq_match_distance=31, pdq_min_quality=50)


def flip(hex_: str, bits: list[int]) -> str:
    value = int(hex_, 16)
    for b in bits:
        value ^= 1 << b
    return f"{value:064x}"


def test_slices_are_the_hash_in_sixteen_bit_bands():
    h = "0123456789abcdef" * 4
    assert groups.pdq_slices(h)[:4] == [0x0123, 0x4567, 0x89AB, 0xCDEF]
    assert "".join(f"{v:04x}" for v in groups.pdq_slices(h)) == h


def test_sha256_key_fits_a_signed_32_bit_column():
    assert groups.sha256_key("ff" * 32) == -1
    assert groups.sha256_key("7fffffff" + "0" * 56) == 2**31 - 1
    assert groups.sha256_key("80000000" + "0" * 56) == -(2**31)


@given(st.integers(0, 2**256 - 1), st.data())
def test_hashes_within_fifteen_bits_always_share_a_band(value, data):
    a = f"{value:064x}"
    bits = data.draw(st.lists(st.integers(0, 255), max_size=15, unique=True))
    b = flip(a, bits)
    assert pdq.distance(a, b) == len(bits)
    assert set(enumerate(groups.pdq_slices(a))) & set(enumerate(groups.pdq_slices(b)))


def test_most_pairs_up_to_the_match_distance_share_a_band():
    rng = random.Random(7)
    shared = 0
    for _ in range(2000):
        a = f"{rng.getrandbits(256):064x}"
        b = flip(a, rng.sample(range(256), 31))
        shared += bool(set(enumerate(groups.pdq_slices(a))) & set(enumerate(groups.pdq_slices(b))))
    assert shared / 2000 > 0.8  # documented in docs/review-console.md


def test_lookup_keys_for_images_videos_and_weak_hashes():
    good = make_item(pdq="ab" * 32, pdq_quality=90, sha256="cd" * 32)
    assert [b for b, _ in groups.lookup_keys(good, POLICY)] == list(range(17))
    weak = make_item(pdq="ab" * 32, pdq_quality=49, sha256="cd" * 32)
    video = make_item(pdq="ab" * 32, pdq_quality=90, sha256="cd" * 32, vpdq="0,ab,90,0.0")
    for item in (weak, video):
        assert groups.lookup_keys(item, POLICY) == [(16, groups.sha256_key("cd" * 32))]


@pytest.mark.parametrize(
    ("matches", "key"),
    [
        ([], None),
        ([{"bank_action": "allow", "entry_id": 1}], None),
        ([{"bank_action": "review", "entry_id": 2, "quarantined": True}], None),
        ([{"bank_action": "allow", "entry_id": 1}, {"bank_action": "review", "entry_id": 3}], "entry:3"),
        (
            [{"bank_action": "auto_remove", "entry_id": 4}, {"bank_action": "review", "entry_id": 5}],
            "entry:4",
        ),
    ],
)
def test_entry_key_is_the_strongest_flagging_match(matches, key):
    assert groups.entry_key(matches) == key


def test_similarity_by_bytes_and_by_pdq():
    base = make_item(1, pdq="00" * 32, pdq_quality=90, sha256="a" * 64)
    base.id = 1
    same_bytes = make_item(2, pdq="ff" * 32, pdq_quality=0, sha256="a" * 64)
    same_bytes.id = 2
    near = make_item(3, pdq=flip("00" * 32, list(range(31))), pdq_quality=60, sha256="b" * 64)
    near.id = 3
    far = make_item(4, pdq=flip("00" * 32, list(range(32))), pdq_quality=60, sha256="c" * 64)
    weak = make_item(5, pdq="00" * 32, pdq_quality=40, sha256="d" * 64)
    copy = groups.similarity(base, same_bytes, POLICY)
    assert copy is not None and copy.same_file and copy.distance == 0
    copy = groups.similarity(base, near, POLICY)
    assert copy is not None and not copy.same_file and copy.distance == 31
    assert groups.similarity(base, far, POLICY) is None
    assert groups.similarity(base, weak, POLICY) is None


def result(outcome: str) -> review.DecisionResult:
    return review.DecisionResult(None, 0, outcome)


def test_summary_says_what_was_decided_and_what_was_left_alone():
    done = GroupDecision("entry:12", "remove", "ncii", [(i, result(review.DECIDED)) for i in range(5)])
    done.left_alone = [(9, HELD)]
    assert done.summary() == "Removed 5 items of group entry:12 (1 held by another moderator, left alone)."
    held = GroupDecision("item:3", "remove", "ncii", [(1, result(review.FIRST_REVIEW))])
    held.left_alone = [(4, OTHER_QUEUE), (5, OTHER_QUEUE)]
    assert held.summary() == (
        "1 item of group item:3 sent for a second review (four eyes) (2 in another queue, left alone)."
    )
    assert GroupDecision(None, "allow", "not_violating").summary() == "Allowed 0 items."
