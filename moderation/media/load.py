"""Bytes -> a decoded picture or a few sampled video frames, within limits.

Images are decoded by ``media/decode.py`` (pixel limit read from the header
first). MP4 and WebM are recognised by their magic bytes, whatever the event
declared, and a few frames are sampled for the classifier and the console.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moderation.errors import MediaDecodeError
from moderation.hashing import video
from moderation.media.decode import CONTENT_TYPES, decode_image

VIDEO_CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}
CLASSIFY_FRAMES = 4


@dataclass(frozen=True)
class MediaLimits:
    max_image_pixels: int = 50_000_000
    video_seconds_per_hash: float = 1.0
    video_max_seconds: int = 600
    video_frame_min_quality: int = 50


@dataclass(frozen=True)
class Media:
    kind: str  # image | video
    content_type: str
    pictures: tuple[np.ndarray, ...]  # the image, or sampled video frames (BGR)


def load_media(data: bytes, limits: MediaLimits) -> Media:
    """Raises MediaDecodeError / MediaTooLarge (InvalidInput) for bad media."""
    container = video.is_video(data)
    if container is not None:
        frames = video.sample_frames(data, count=CLASSIFY_FRAMES, max_pixels=limits.max_image_pixels)
        if not frames:
            raise MediaDecodeError(f"{container} video has no decodable frames")
        return Media("video", VIDEO_CONTENT_TYPES[container], tuple(frames))
    fmt, image = decode_image(data, limits.max_image_pixels)
    return Media("image", CONTENT_TYPES[fmt], (image,))
