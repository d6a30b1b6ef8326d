"""The in-memory bank index: exact and PDQ lookups, variants, per-bank
thresholds, lifecycle changes applied incrementally, video matching."""

from __future__ import annotations

from moderation.domain import BankAction, BankConfig, EntryState, EntryStatus, HashSet
from moderation.hashing import hash_media, pdq
from moderation.hashing.index import BankIndex
from moderation.media.decode import decode_image
from tests.support.images import encode, reencoded_copy, synthetic_image

ACTIVE = EntryStatus.ACTIVE
BANKS = [
    BankConfig(1, "victims", BankAction.AUTO_REMOVE),
    BankConfig(2, "confirmed", BankAction.AUTO_REMOVE),
    BankConfig(3, "other", BankAction.REVIEW),
    BankConfig(4, "strict", BankAction.REVIEW, pdq_distance=10),
]
BASE = "0" * 64
AT_31 = "f" * 7 + "7" + "0" * 56  # 31 bits set


def hashes_of(data: bytes) -> HashSet:
    return hash_media(data, decode_image(data, 10**8)[1])


def entry(i: int, bank_id: int, signal: str, value: str, status: EntryStatus = ACTIVE) -> EntryState:
    return EntryState(i, bank_id, signal, value, status)


def index_with(*entries: EntryState, banks: list[BankConfig] = BANKS, distance: int = 31) -> BankIndex:
    index = BankIndex(pdq_match_distance=distance)
    index.set_banks(banks)
    index.apply(entries)
    return index


def plain(pdq_hex: str, **kw: object) -> HashSet:
    return HashSet(sha256="s", md5="m", pdq=pdq_hex, pdq_quality=100, **kw)  # type: ignore[arg-type]


def test_exact_and_near_hashes_best_first():
    target = hashes_of(encode(synthetic_image(10)))
    near = hashes_of(reencoded_copy(synthetic_image(10)))
    far = hashes_of(encode(synthetic_image(11)))
    index = index_with(
        entry(1, 1, "sha256", target.sha256),
        entry(2, 2, "pdq", near.pdq),
        entry(3, 3, "pdq", far.pdq),
        entry(4, 3, "md5", "0" * 32),
    )
    found = index.match(target)
    assert [(m.bank, m.signal) for m in found] == [("victims", "sha256"), ("confirmed", "pdq")]
    assert found[0].distance == 0 and 0 < found[1].distance <= 31
    assert index.match(far)[0].bank == "other"


def test_threshold_is_inclusive_global_and_per_bank():
    assert pdq.distance(BASE, AT_31) == 31
    assert len(index_with(entry(1, 3, "pdq", AT_31)).match(plain(BASE))) == 1
    assert index_with(entry(1, 3, "pdq", AT_31), distance=30).match(plain(BASE)) == []
    at_10 = "ff" + "c0" + "0" * 60
    assert pdq.distance(BASE, at_10) == 10
    strict = index_with(entry(1, 4, "pdq", AT_31), entry(2, 4, "pdq", at_10))
    assert [m.entry_id for m in strict.match(plain(BASE))] == [2]


def test_apply_is_idempotent_and_lifecycle_changes_apply_incrementally():
    index = index_with(entry(5, 1, "sha256", "a" * 64), entry(6, 1, "pdq", BASE))
    assert len(index) == 2
    assert index.apply([entry(5, 1, "sha256", "a" * 64), entry(6, 1, "pdq", BASE)]) == 0
    assert len(index) == 2
    index.apply([entry(6, 1, "pdq", BASE, EntryStatus.QUARANTINED)])
    assert index.match(plain(BASE))[0].quarantined
    index.apply([entry(6, 1, "pdq", BASE, EntryStatus.WITHDRAWN)])
    assert index.match(plain(BASE)) == [] and len(index) == 1
    index.apply([entry(6, 1, "pdq", BASE)])  # re-enabled
    assert [m.entry_id for m in index.match(plain(BASE))] == [6]
    index.apply([entry(5, 1, "sha256", "a" * 64, EntryStatus.DISABLED)])
    assert index.match(HashSet("a" * 64, "m", "", 0)) == []


def test_disabled_bank_stops_matching_without_rebuild():
    index = index_with(entry(1, 3, "pdq", BASE))
    index.set_banks([BankConfig(3, "other", BankAction.REVIEW, enabled=False)])
    assert index.match(plain(BASE)) == []


def test_variants_are_looked_up_and_the_best_is_reported():
    index = index_with(entry(1, 3, "pdq", AT_31))
    found = index.match(plain("f" * 64, pdq_variants={"rotate90": AT_31, "trimmed": BASE}))
    assert [(m.entry_id, m.variant, m.distance) for m in found] == [(1, "rotate90", 0)]


def test_a_malformed_bank_entry_is_skipped_not_fatal():
    good = hashes_of(encode(synthetic_image(12)))
    index = BankIndex()
    index.set_banks(BANKS)
    assert index.apply([entry(1, 1, "pdq", "not-a-hash"), entry(2, 1, "pdq", good.pdq)]) == 1
    assert [m.entry_id for m in index.match(good)] == [2]


def _frames(*hexes: str, quality: int = 90) -> str:
    from moderation.hashing.video import VideoFrameHash, serialize

    return serialize(VideoFrameHash(h, quality, float(i), i) for i, h in enumerate(hexes))


def test_videos_match_by_the_share_of_the_uploads_frames():
    frames = [f"{i:x}" * 64 for i in range(1, 10)]  # 9 distinct frame hashes
    index = index_with(entry(1, 1, "vpdq", _frames(*frames)))

    def video(*hexes: str) -> HashSet:
        return HashSet("s", "m", hexes[0], 90, vpdq=_frames(*hexes), vpdq_frames=hexes)

    whole = index.match(video(*frames))
    assert [(m.signal, m.share) for m in whole] == [("vpdq", 1.0)]
    clip = index.match(video(*frames[2:5]))  # a clip cut from the banked video
    assert clip and clip[0].share == 1.0
    mixed = video(*frames[:4], "e" * 64)  # 4 of 5 frames: exactly 80%
    assert index.match(mixed)[0].share == 0.8
    assert index.match(video(*frames[:3], "e" * 64, "c0" * 32)) == []  # 60%


def test_low_quality_frames_of_a_banked_video_are_ignored():
    index = index_with(entry(1, 1, "vpdq", _frames("a" * 64, quality=10)))
    assert len(index) == 0 or index.match(HashSet("s", "m", "a" * 64, 90, vpdq_frames=("a" * 64,))) == []


def test_an_entry_added_and_removed_in_one_batch_is_gone():
    index = index_with(entry(1, 3, "pdq", BASE), entry(1, 3, "pdq", BASE, EntryStatus.WITHDRAWN))
    assert len(index) == 0 and index.match(plain(BASE)) == []
    index.apply([entry(1, 3, "pdq", BASE)])
    assert [m.entry_id for m in index.match(plain(BASE))] == [1]
