"""Synthetic test videos: deterministic, benign, written with OpenCV's VideoWriter.

Each second shows a different synthetic image (tests/support/images.py) drifting
a few pixels per frame, so one PDQ per second gives distinct, high-quality hashes.
MP4 is MPEG-4 Part 2 ('mp4v'), WebM is VP8 ('VP80'): the encoders the
opencv-python-headless wheels ship.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from tests.support.images import synthetic_image

FOURCC = {".mp4": "mp4v", ".webm": "VP80"}


def synthetic_frames(
    seed: int, seconds: int = 3, fps: int = 10, size: tuple[int, int] = (240, 320)
) -> list[np.ndarray]:
    """BGR frames (height, width = ``size``): a new scene every second, slight motion."""
    frames: list[np.ndarray] = []
    for second in range(seconds):
        scene = synthetic_image(seed * 1000 + second, size)
        frames.extend(np.roll(scene, 2 * i, axis=1) for i in range(fps))
    return frames


def write_video(
    path: str | Path | None, frames: Iterable[np.ndarray], fps: float, ext: str = ".mp4"
) -> bytes:
    """The encoded video's bytes; also left at ``path`` unless it is None."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(path) if path is not None else Path(tmp) / f"video{ext}"
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*FOURCC[ext]), fps, (w, h))
        assert writer.isOpened(), f"OpenCV cannot write {ext} ({FOURCC[ext]})"
        for frame in frames:
            writer.write(frame)
        writer.release()
        return out.read_bytes()


def synthetic_video(
    path: str | Path | None,
    seed: int,
    seconds: int = 3,
    fps: int = 10,
    size: tuple[int, int] = (240, 320),
    ext: str = ".mp4",
) -> bytes:
    """A ``seconds`` long video of ``synthetic_frames`` as MP4 or WebM bytes."""
    return write_video(path, synthetic_frames(seed, seconds, fps, size), fps, ext)


def reencoded_video(data: bytes, scale: float = 0.6, ext: str = ".webm", fps: float | None = None) -> bytes:
    """A re-upload: every frame decoded, resized and encoded again (other codec by default)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "source"
        src.write_bytes(data)
        capture = cv2.VideoCapture(str(src))
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            h, w = frame.shape[:2]
            frames.append(cv2.resize(frame, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA))
        capture.release()
    return write_video(None, frames, fps or source_fps, ext)
