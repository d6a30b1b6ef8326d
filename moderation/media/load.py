"""Bytes -> a decoded picture, animation frames or sampled video frames, within limits.

Images are decoded by ``media/decode.py`` (pixel limit read from the header
first, large JPEGs at reduced scale). MP4 and WebM are recognised by their magic
bytes, whatever the event declared, and a few frames are sampled for the
classifier and the console; animated GIF, WebP and PNG (APNG) likewise. The
event's declared ``media_type`` is never consulted: the bytes decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moderation.errors import MediaDecodeError
from moderation.hashing import video
from moderation.media.decode import ANIMATED, CONTENT_TYPES, animation_frames, decode_with_header

VIDEO_CONTENT_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}
CLASSIFY_FRAMES = 4


@dataclass(frozen=True)
class MediaLimits:
    max_image_pixels: int = 50_000_000
    video_seconds_per_hash: float = 1.0
    video_max_seconds: int = 600
    video_frame_min_quality: int = 50
    decode_min_side: int = 768  # JPEGs decode at 1/2..1/8 scale down to this shorter side; 0: full size


@dataclass(frozen=True)
class Media:
    kind: str  # image | animation | video
    content_type: str
    pictures: tuple[np.ndarray, ...]  # the image (first), or sampled animation/video frames (BGR)


def load_media(data: bytes, limits: MediaLimits) -> Media:
    """Raises MediaDecodeError / MediaTooLarge (InvalidInput) for bad media."""
    container = video.is_video(data)
    if container is not None:
        frames = video.sample_frames(data, count=CLASSIFY_FRAMES, max_pixels=limits.max_image_pixels)
        if not frames:
            raise MediaDecodeError(f"{container} video has no decodable frames")
        return Media("video", VIDEO_CONTENT_TYPES[container], tuple(frames))
    fmt, width, height, image = decode_with_header(data, limits.max_image_pixels, limits.decode_min_side)
    if fmt in ANIMATED:
        # The first picture is the one hashed: OpenCV's decode of frame 0.
        frames = animation_frames(data, fmt, width, height, CLASSIFY_FRAMES, limits.max_image_pixels, image)
        if len(frames) > 1:
            return Media("animation", CONTENT_TYPES[fmt], tuple(frames))
    return Media("image", CONTENT_TYPES[fmt], (image,))
