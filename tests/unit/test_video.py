from __future__ import annotations

import json

import numpy as np
import pytest

from moderation.errors import InvalidInput, MediaDecodeError, MediaTooLarge
from moderation.hashing import pdq, video
from moderation.hashing.video import VideoFrameHash
from tests.support.images import encode, synthetic_image
from tests.support.videos import reencoded_video, synthetic_video

HAVE_VPDQ = video.vpdq_available()


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return synthetic_video(None, seed=1, seconds=4, fps=10, size=(240, 320), ext=".mp4")


@pytest.fixture(scope="module")
def webm() -> bytes:
    return synthetic_video(None, seed=1, seconds=4, fps=10, size=(240, 320), ext=".webm")


@pytest.fixture(scope="module")
def mp4_hashes(mp4: bytes) -> list[VideoFrameHash]:
    return video.hash_video(mp4)


@pytest.fixture
def opencv_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "vpdq_available", lambda: False)


def hexes(frames: list[VideoFrameHash]) -> list[str]:
    return video.frame_hashes(frames)


def test_is_video_sniffs_magic_bytes(mp4: bytes, webm: bytes):
    assert video.is_video(mp4) == "mp4"
    assert video.is_video(webm) == "webm"
    assert video.is_video(encode(synthetic_image(1))) is None
    assert video.is_video(b"") is None


def test_one_good_hash_per_second(mp4_hashes: list[VideoFrameHash]):
    assert [round(f.timestamp) for f in mp4_hashes] == [0, 1, 2, 3]
    assert [f.frame_number for f in mp4_hashes] == [0, 10, 20, 30]
    assert all(pdq.is_pdq_hex(f.pdq) and f.quality >= 50 for f in mp4_hashes)
    assert len(set(hexes(mp4_hashes))) == 4


def test_reencoded_copy_matches_and_unrelated_video_does_not(mp4: bytes, mp4_hashes: list[VideoFrameHash]):
    original = hexes(mp4_hashes)
    copy = hexes(video.hash_video(reencoded_video(mp4, scale=0.6, ext=".webm")))
    other = hexes(video.hash_video(synthetic_video(None, seed=2, seconds=4)))
    assert video.frame_match_shares(original, copy) == (1.0, 1.0)
    assert video.video_matches(copy, original, share=0.8, target_share=0.8)
    assert video.frame_match_shares(original, other) == (0.0, 0.0)
    assert not video.video_matches(other, original)


def test_a_clip_matches_the_full_video_only_by_the_query_share(mp4_hashes: list[VideoFrameHash]):
    full, clip = hexes(mp4_hashes), hexes(mp4_hashes)[:2]
    assert video.frame_match_shares(clip, full) == (1.0, 0.5)
    assert video.video_matches(clip, full)  # threatexchange default: target share >= 0%
    assert not video.video_matches(clip, full, target_share=0.8)
    assert not video.video_matches(full, clip)


def test_match_shares_count_unique_frames_within_distance():
    a, b, c = "0" * 64, "0" * 56 + "ffffffff", "f" * 64  # b is 32 bits from a
    assert video.frame_match_shares([a, a, c], [a]) == (0.5, 1.0)
    assert video.frame_match_shares([b], [a]) == (0.0, 0.0)
    assert video.frame_match_shares([b], [a], distance=32) == (1.0, 1.0)
    assert video.frame_match_shares([], [a]) == (0.0, 0.0)
    assert not video.video_matches([], [a], share=0.0)


def test_frame_hashes_dedupes_then_drops_low_quality_like_threatexchange():
    a, b = "a" * 64, "b" * 64
    frames = [VideoFrameHash(a, 40, 0.0, 0), VideoFrameHash(a, 90, 1.0, 1), VideoFrameHash(b, 90, 2.0, 2)]
    assert video.frame_hashes(frames) == [b]
    assert video.frame_hashes(frames, min_quality=0) == [a, b]


def test_serialize_is_threatexchange_vpdq_text_and_round_trips(mp4_hashes: list[VideoFrameHash]):
    text = video.serialize(mp4_hashes)
    assert json.loads(text)[1] == f"{mp4_hashes[1].pdq},{mp4_hashes[1].quality},1.000"
    parsed = video.parse(text)
    assert [(f.pdq, f.quality, f.timestamp) for f in parsed] == [
        (f.pdq, f.quality, round(f.timestamp, 3)) for f in mp4_hashes
    ]
    assert video.serialize(parsed) == text
    assert video.parse("") == [] and video.parse("[]") == []


def test_parse_reads_threatexchange_formats_and_rejects_junk():
    h = "AB" * 32
    legacy = json.dumps({"7": {"hash": h, "quality": 99, "timestamp": 0.7}})
    assert video.parse(legacy) == [VideoFrameHash(h.lower(), 99, 0.7, 7)]
    # threatexchange writes f"{t:.3}" (3 significant digits), e.g. 1.23e+02
    assert video.parse(json.dumps([f"{h},100,1.23e+02"]))[0].timestamp == 123.0
    for bad in ('["abc,1,0"]', f'["{h},101,0"]', f'["{h},50,-1"]', f'["{h},50"]', "{", "3", '{"1": 2}'):
        with pytest.raises(ValueError):
            video.parse(bad)


@pytest.mark.skipif(not HAVE_VPDQ, reason="vpdq is not installed")
def test_opencv_fallback_gives_vpdq_hashes_bit_for_bit(
    mp4: bytes, webm: bytes, mp4_hashes: list[VideoFrameHash], monkeypatch: pytest.MonkeyPatch
):
    vpdq_webm = video.hash_video(webm)
    monkeypatch.setattr(video, "vpdq_available", lambda: False)
    assert video.hash_video(mp4) == mp4_hashes
    assert video.hash_video(webm) == vpdq_webm


@pytest.mark.skipif(not HAVE_VPDQ, reason="vpdq is not installed")
def test_vpdq_runs_in_a_child_and_a_failed_or_slow_child_falls_back_to_opencv(
    mp4: bytes, mp4_hashes: list[VideoFrameHash], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(video, "_VPDQ_CHILD", f"print(7, 99, '{'c' * 64}', 0.5)")
    assert video.hash_video(mp4) == [VideoFrameHash("c" * 64, 99, 0.5, 7)]
    for child in ("raise SystemExit(3)", "import time; time.sleep(30)", "print('junk')"):
        monkeypatch.setattr(video, "_VPDQ_CHILD", child)
        assert video.hash_video(mp4, timeout_s=1) == mp4_hashes


def test_fallback_hashes_webm_one_per_second(webm: bytes, opencv_only: None):
    frames = video.hash_video(webm)
    assert [round(f.timestamp) for f in frames] == [0, 1, 2, 3]


def test_limits_bound_the_work(mp4: bytes, opencv_only: None):
    assert len(video.hash_video(mp4, max_seconds=2)) == 2
    assert len(video.hash_video(mp4, max_frames=15)) == 2  # frames 0 and 10 decoded
    assert len(video.hash_video(mp4, seconds_per_hash=2)) == 2
    with pytest.raises(MediaTooLarge):
        video.hash_video(mp4, max_pixels=320 * 240 - 1)


def test_long_videos_are_hashed_over_their_first_max_seconds(mp4: bytes):
    # with vpdq installed the header's 4 s exceed the limit, so OpenCV stops early
    assert [round(f.timestamp) for f in video.hash_video(mp4, max_seconds=2)] == [0, 1]


def test_min_quality_drops_flat_frames(opencv_only: None):
    from tests.support.videos import write_video

    flat = write_video(None, [np.full((120, 160, 3), 128, np.uint8)] * 20, fps=10)
    assert video.hash_video(flat) == []
    assert len(video.hash_video(flat, min_quality=0)) == 2


@pytest.mark.parametrize("vpdq_on", [True, False])
def test_truncated_and_garbage_videos_are_invalid_input(mp4: bytes, vpdq_on: bool, monkeypatch):
    monkeypatch.setattr(video, "vpdq_available", lambda: vpdq_on and HAVE_VPDQ)
    junk = mp4[:8] + bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8))
    for data in (mp4[: len(mp4) // 2], junk, b"\x1a\x45\xdf\xa3" + b"\0" * 100, b"not a video"):
        with pytest.raises(MediaDecodeError) as raised:
            video.hash_video(data)
        assert isinstance(raised.value, InvalidInput)


def scenes_of(frames: list[np.ndarray]) -> list[int]:
    """Which second of the seed-1 synthetic video each frame shows."""
    scenes = [pdq.hash_image(synthetic_image(1000 + s, (240, 320)))[0] for s in range(4)]
    return [min(range(4), key=lambda s: pdq.distance(pdq.hash_image(f)[0], scenes[s])) for f in frames]


def test_sample_frames_spread_over_the_video(mp4: bytes, webm: bytes):
    frames = video.sample_frames(mp4, count=4)
    assert len(frames) == 4 and all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    assert scenes_of(frames) == [0, 1, 2, 3]
    assert scenes_of(video.sample_frames(webm, count=2)) == [1, 3]  # frames 10 and 30
    # the header's 40 frames exceed max_frames: decoded in order, spread over the first 20
    assert scenes_of(video.sample_frames(mp4, count=2, max_frames=20)) == [0, 1]
    assert scenes_of(video.sample_frames(mp4, count=4, max_frames=39)) == [0, 1, 2, 3]
    assert len(video.sample_frames(mp4, count=100)) == 40
    with pytest.raises(MediaTooLarge):
        video.sample_frames(mp4, max_pixels=1000)
    with pytest.raises(MediaDecodeError):
        video.sample_frames(mp4[:100])
