"""vPDQ for MP4/WebM: one PDQ per second of video, frame sampling, and vPDQ matching.

Hashing prefers Meta's ``vpdq`` package (what ThreatExchange/HMA use), run in a
child process: it decodes the whole file while holding the GIL, and a crash or a
hostile file must cost one child, not the worker. The child has a wall-clock
timeout and an address-space limit. Without ``vpdq``, when it fails, or when the
header says the video is longer than the limits, frames are decoded with OpenCV
(which stops at the limits) and hashed with PDQ at full resolution, as vpdq does;
on the videos measured those hashes equal vpdq's bit for bit.

Text format (python-threatexchange ``VPDQSignal``): a JSON list of
``"<pdq hex>,<quality>,<timestamp seconds>"`` strings. Matching mirrors
``match_VPDQ_hash_brute``: both frame lists are deduplicated by hash, and a
frame counts as matched when any frame of the other list is within the distance.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import pdqhash

from moderation.errors import MediaDecodeError, MediaTooLarge
from moderation.hashing import pdq

log = logging.getLogger(__name__)

VPDQ_DISTANCE = 31  # python-threatexchange VPDQ_DISTANCE_THRESHOLD
VPDQ_MIN_QUALITY = 50  # VPDQ_QUALITY_THRESHOLD
VPDQ_SHARE = 0.8  # VPDQ_QUERY_MATCH_THRESHOLD_PERCENT / 100
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_MAX_FRAMES = 36_000  # decoded frames: ten minutes at 60 fps
DEFAULT_MAX_PIXELS = 7680 * 4320  # 8K UHD
DEFAULT_TIMEOUT_S = 120.0
_CHILD_ADDRESS_SPACE = 4 << 30
_SUFFIX = {"mp4": ".mp4", "webm": ".webm"}

# Runs with the same interpreter (so the same site-packages), isolated from the
# environment. Prints "frame quality hex timestamp" per hashed frame.
_VPDQ_CHILD = """
import resource, sys
try:
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
except (ValueError, OSError):
    pass
import vpdq
for f in vpdq.computeHash(sys.argv[1], seconds_per_hash=float(sys.argv[2]), thread_count=1):
    print(f.frame_number, f.quality, f.hex, repr(f.timestamp))
"""


@dataclass(frozen=True)
class VideoFrameHash:
    """One hashed frame. ``pdq``: 64 lowercase hex (threatexchange bit order);
    ``quality``: 0..100; ``timestamp``: seconds from the start; ``frame_number``:
    the decoded frame's index, -1 when parsed from text (the format drops it)."""

    pdq: str
    quality: int
    timestamp: float
    frame_number: int


@dataclass(frozen=True)
class _Probe:
    width: int
    height: int
    fps: float  # 0.0 when the header gives none
    frames: int  # declared frame count, 0 when unknown


# ISO base media files that are still images (HEIF, AVIF), not videos.
IMAGE_BRANDS = frozenset(
    {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)


def is_video(data: bytes) -> str | None:
    """``"mp4"`` (ISO base media, also MOV: an ``ftyp`` box first, unless its major
    brand is a HEIF/AVIF image's), ``"webm"`` (EBML header, also Matroska), or
    None. Magic bytes only; nothing is decoded."""
    if data[4:8] == b"ftyp":
        return None if data[8:12] in IMAGE_BRANDS else "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def vpdq_available() -> bool:
    """Whether the ``vpdq`` package is installed (it is not imported here)."""
    return importlib.util.find_spec("vpdq") is not None


def hash_video(
    data: bytes,
    *,
    seconds_per_hash: float = 1.0,
    min_quality: int = VPDQ_MIN_QUALITY,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[VideoFrameHash]:
    """One PDQ per ``seconds_per_hash`` over the first ``max_seconds``, in time order,
    frames under ``min_quality`` dropped (the list may be empty).

    At most ``max_frames`` frames are decoded by the OpenCV path; vpdq is used only
    when the header's duration and frame count are within the limits, and is
    stopped after ``timeout_s`` (then OpenCV hashes instead). Raises
    MediaDecodeError (not MP4/WebM, unreadable, no frames) or MediaTooLarge
    (frames over ``max_pixels``); both are InvalidInput."""
    if seconds_per_hash <= 0:
        raise ValueError("seconds_per_hash must be positive")
    with _opencv_errors(), _video_file(data) as path:
        capture, probe = _open(path, max_pixels)
        try:
            frames = None
            if vpdq_available() and _within_limits(probe, max_frames, max_seconds):
                frames = _hash_with_vpdq(path, seconds_per_hash, timeout_s)
            if frames is None:
                frames = _hash_with_opencv(
                    capture, probe.fps, seconds_per_hash, max_frames, max_seconds, max_pixels
                )
        finally:
            capture.release()
    return [f for f in frames if f.quality >= min_quality and f.timestamp < max_seconds]


def sample_frames(
    data: bytes,
    count: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> list[np.ndarray]:
    """Up to ``count`` BGR frames spread evenly over the video, for the classifier
    and the console thumbnail. With a frame count in the header (at most
    ``max_frames``) each is reached by seeking, which decodes from the keyframe
    before it; otherwise frames are decoded in order, at most ``max_frames`` of
    them, keeping at most ``2 * count`` in memory. Raises like ``hash_video``."""
    if count < 1:
        return []
    with _opencv_errors(), _video_file(data) as path:
        capture, probe = _open(path, max_pixels)
        try:
            frames = (
                _seek_frames(capture, probe.frames, count, max_pixels)
                if 0 < probe.frames <= max_frames
                else []
            )
        finally:
            capture.release()
        if frames:
            return frames
        capture, _ = _open(path, max_pixels)
        try:
            return _spread_frames(capture, count, max_frames, max_pixels)
        finally:
            capture.release()


def serialize(frames: Iterable[VideoFrameHash]) -> str:
    """python-threatexchange's vPDQ text: ``["<hex>,<quality>,<seconds>", ...]``
    (timestamps with 3 decimals; threatexchange reads them with ``float``)."""
    return json.dumps([f"{f.pdq},{f.quality},{f.timestamp:.3f}" for f in frames])


def parse(text: str) -> list[VideoFrameHash]:
    """Frames of a vPDQ text: the current JSON list of ``"hex,quality,seconds"``
    strings, or threatexchange's older ``{frame: {"hash", "quality", "timestamp"}}``
    object. Empty text is no frames. Raises ValueError naming the bad item."""
    loaded = json.loads(text) if text.strip() else []
    if isinstance(loaded, dict):
        if not all(isinstance(v, dict) for v in loaded.values()):
            raise ValueError("vPDQ object values must be {hash, quality, timestamp} objects")
        items = [(v.get("hash"), v.get("quality"), v.get("timestamp"), int(k)) for k, v in loaded.items()]
    elif isinstance(loaded, list):
        items = []
        for s in loaded:
            parts = s.split(",") if isinstance(s, str) else []
            if len(parts) != 3:
                raise ValueError(f"vPDQ frame must be 'hex,quality,seconds': {str(s)[:100]!r}")
            items.append((parts[0], parts[1], parts[2], -1))
    else:
        raise ValueError("vPDQ text must be a JSON list (or object)")
    return [_frame(*item) for item in items]


def frame_hashes(frames: Iterable[VideoFrameHash], min_quality: int = VPDQ_MIN_QUALITY) -> list[str]:
    """The hashes threatexchange compares: deduplicated (first occurrence kept),
    then frames under ``min_quality`` dropped; input order kept."""
    seen: set[str] = set()
    unique = []
    for f in frames:
        if f.pdq not in seen:
            seen.add(f.pdq)
            unique.append(f)
    return [f.pdq for f in unique if f.quality >= min_quality]


def frame_match_shares(
    query: Sequence[str], target: Sequence[str], distance: int = VPDQ_DISTANCE
) -> tuple[float, float]:
    """(share of unique query hashes within ``distance`` of some target hash, share
    of unique target hashes within ``distance`` of some query hash), each 0..1.
    threatexchange reports these as percentages; (0.0, 0.0) if either is empty.
    Quality filtering is the caller's (see ``frame_hashes``)."""
    q = _packed(query)
    t = _packed(target)
    if not len(q) or not len(t):
        return 0.0, 0.0
    query_hit = np.zeros(len(q), dtype=bool)
    target_hit = np.zeros(len(t), dtype=bool)
    for i, code in enumerate(q):
        close = pdq.distances(code, t) <= distance
        query_hit[i] = close.any()
        target_hit |= close
    return float(query_hit.mean()), float(target_hit.mean())


def video_matches(
    query: Sequence[str],
    target: Sequence[str],
    *,
    distance: int = VPDQ_DISTANCE,
    share: float = VPDQ_SHARE,
    target_share: float = 0.0,
) -> bool:
    """threatexchange's ``VPDQSignal.compare_hash``: the query share reaches ``share``
    and the target share reaches ``target_share`` (and at least one frame matched).
    Its defaults (80%, 0%) let a clip of a banked video match it;
    ``target_share=share`` asks for both shares."""
    query_share, matched_target_share = frame_match_shares(query, target, distance)
    return query_share > 0 and query_share >= share and matched_target_share >= target_share


# -- internals ------------------------------------------------------------------------


@contextmanager
def _opencv_errors() -> Iterator[None]:
    """An OpenCV assertion on a hostile file (cv2.error) is the file's fault:
    MediaDecodeError, not an unexpected error."""
    try:
        yield
    except cv2.error as exc:
        lines = str(exc).strip().splitlines()
        detail = lines[-1][:200] if lines else "OpenCV error"
        raise MediaDecodeError(f"video could not be decoded ({detail})") from None


@contextmanager
def _video_file(data: bytes) -> Iterator[str]:
    container = is_video(data)
    if container is None:
        raise MediaDecodeError("not an MP4 or WebM video")
    fd, path = tempfile.mkstemp(prefix="moderation-video-", suffix=_SUFFIX[container])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        os.unlink(path)


def _open(path: str, max_pixels: int) -> tuple[cv2.VideoCapture, _Probe]:
    # Opening reads the header (and may decode a first frame); no frame is read
    # before the declared size is checked.
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise MediaDecodeError("video could not be opened (truncated, corrupt or unsupported codec)")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width <= 0 or height <= 0:
            raise MediaDecodeError("video has no picture size")
        _check_pixels(width, height, max_pixels)
    except BaseException:
        capture.release()
        raise
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return capture, _Probe(
        width,
        height,
        fps if math.isfinite(fps) and fps > 0 else 0.0,
        int(frames) if math.isfinite(frames) and frames > 0 else 0,
    )


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaTooLarge(f"video frames are {width}x{height} = {width * height} pixels, over {max_pixels}")


def _within_limits(probe: _Probe, max_frames: int, max_seconds: float) -> bool:
    # vpdq decodes the whole file: use it only when the header says that fits
    # (an unknown length is left to the timeout).
    if probe.frames > max_frames:
        return False
    return not (probe.frames and probe.fps and probe.frames / probe.fps > max_seconds + 1)


def _hash_with_vpdq(path: str, seconds_per_hash: float, timeout_s: float) -> list[VideoFrameHash] | None:
    """vpdq's frames, or None (logged) if it failed, found no frames or ran out of time."""
    argv = [sys.executable, "-I", "-c", _VPDQ_CHILD, path, repr(seconds_per_hash), str(_CHILD_ADDRESS_SPACE)]
    # Few malloc arenas, so the address-space limit measures memory, not reservations.
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        log.warning("vpdq took over %.0f s; hashing the video with OpenCV", timeout_s)
        return None
    if done.returncode != 0:
        log.warning("vpdq failed (exit %d), hashing with OpenCV: %s", done.returncode, done.stderr[-300:])
        return None
    try:
        frames = [_child_frame(line) for line in done.stdout.splitlines()]
    except ValueError:
        log.warning("vpdq printed unexpected output, hashing with OpenCV: %r", done.stdout[:200])
        return None
    return frames or None  # no frames at all: let OpenCV decide whether the file is undecodable


def _child_frame(line: str) -> VideoFrameHash:
    number, quality, hex_, seconds = line.split()
    return _frame(hex_, quality, round(float(seconds), 3), int(number))


def _hash_with_opencv(
    capture: cv2.VideoCapture,
    fps: float,
    seconds_per_hash: float,
    max_frames: int,
    max_seconds: float,
    max_pixels: int,
) -> list[VideoFrameHash]:
    """vpdq's frame choice: every ``int(seconds_per_hash * fps)``-th decoded frame,
    at ``frame / fps`` seconds (so the same frames get the same hashes). Without a
    frame rate in the header, the first frame at or after each multiple of
    ``seconds_per_hash`` by the frames' own timestamps."""
    out: list[VideoFrameHash] = []
    step = max(1, int(seconds_per_hash * fps)) if fps else 0
    due = 0.0
    for index in range(max_frames):
        if not capture.grab():
            break
        if step:
            seconds, chosen = index / fps, index % step == 0
        else:
            seconds = max(0.0, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
            chosen = seconds + 1e-6 >= due
        if seconds >= max_seconds:
            break
        if not chosen:
            continue
        hex_, quality = _hash_frame(_retrieve(capture, max_pixels))
        out.append(VideoFrameHash(hex_, quality, round(seconds, 3), index))
        due = (math.floor(seconds / seconds_per_hash + 1e-6) + 1) * seconds_per_hash
    if not out:
        raise MediaDecodeError("video has no decodable frames")
    return out


def _seek_frames(capture: cv2.VideoCapture, frames: int, count: int, max_pixels: int) -> list[np.ndarray]:
    out = []
    count = min(count, frames)
    for k in range(count):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int((k + 0.5) * frames / count))
        if capture.grab():  # a header can overstate the length
            out.append(_retrieve(capture, max_pixels))
    return out


def _spread_frames(
    capture: cv2.VideoCapture, count: int, max_frames: int, max_pixels: int
) -> list[np.ndarray]:
    kept: list[tuple[int, np.ndarray]] = []
    stride, decoded = 1, 0
    while decoded < max_frames and capture.grab():
        if decoded % stride == 0:
            kept.append((decoded, _retrieve(capture, max_pixels)))
            if len(kept) == 2 * count:  # keep every other frame, sample half as often
                kept, stride = kept[::2], stride * 2
        decoded += 1
    if len(kept) <= count:
        return [frame for _, frame in kept]
    targets = [(k + 0.5) * decoded / count for k in range(count)]
    return [min(kept, key=lambda item: abs(item[0] - t))[1] for t in targets]


def _hash_frame(frame_bgr: np.ndarray) -> tuple[str, int]:
    # Full resolution, like vpdq: then the hashes are vpdq's bit for bit (measured),
    # where pdq.hash_image's 512-pixel downscale lands 6-10 bits away.
    vector, quality = pdqhash.compute(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
    return pdq.vector_to_hex(vector), int(quality)


def _retrieve(capture: cv2.VideoCapture, max_pixels: int) -> np.ndarray:
    ok, frame = capture.retrieve()
    if not ok or frame is None or frame.size == 0:
        raise MediaDecodeError("video frame could not be decoded")
    _check_pixels(frame.shape[1], frame.shape[0], max_pixels)  # a header can understate the size
    return np.asarray(frame)


def _frame(hex_: object, quality: object, seconds: object, number: int) -> VideoFrameHash:
    try:
        value = str(hex_).strip().lower()
        q = int(str(quality))
        t = float(str(seconds))
    except ValueError:
        raise ValueError(f"bad vPDQ frame {hex_!r},{quality!r},{seconds!r}") from None
    if not pdq.is_pdq_hex(value):
        raise ValueError(f"vPDQ frame hash must be 64 hex characters: {str(hex_)[:80]!r}")
    if not 0 <= q <= 100 or not math.isfinite(t) or t < 0:
        raise ValueError(f"vPDQ frame quality must be 0..100 and timestamp >= 0: {q!r}, {t!r}")
    return VideoFrameHash(value, q, t, number)


def _packed(hexes: Sequence[str]) -> np.ndarray:
    unique = list(dict.fromkeys(h.lower() for h in hexes))
    if not unique:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.stack([pdq.hex_to_bytes(h) for h in unique])
