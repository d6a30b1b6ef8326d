"""Hash algorithms (pure: bytes/pixels -> hash) and the bank index."""

from __future__ import annotations

import numpy as np

from moderation.domain import HashSet
from moderation.hashing import crypto, pdq


def hash_media(data: bytes, image_bgr: np.ndarray, variants: bool = False) -> HashSet:
    """All signals for one decoded image: SHA-256 and MD5 of the bytes, PDQ of the
    pixels, and with ``variants`` the PDQ of its rotations, mirror images and
    border-trimmed copy (looked up too, to catch edited re-uploads)."""
    if variants:
        from moderation.hashing.variants import pdq_variants_with_quality

        found = pdq_variants_with_quality(image_bgr)
        pdq_hex, quality = found.pop("original")
        return HashSet(
            crypto.sha256(data),
            crypto.md5(data),
            pdq_hex,
            quality,
            pdq_variants={name: hex_ for name, (hex_, _q) in found.items()},
            variant_quality={name: q for name, (_hex, q) in found.items()},
        )
    pdq_hex, quality = pdq.hash_image(image_bgr)
    return HashSet(sha256=crypto.sha256(data), md5=crypto.md5(data), pdq=pdq_hex, pdq_quality=quality)


def hash_video_bytes(
    data: bytes,
    seconds_per_hash: float = 1.0,
    max_seconds: float = 600,
    min_quality: int = 50,
    max_pixels: int = 50_000_000,
) -> HashSet:
    """SHA-256, MD5 and the vPDQ frame hashes (one PDQ per ``seconds_per_hash``,
    frames under ``min_quality`` dropped) of an MP4/WebM video."""
    from moderation.hashing import video

    frames = video.hash_video(
        data,
        seconds_per_hash=seconds_per_hash,
        min_quality=min_quality,
        max_seconds=max_seconds,
        max_pixels=max_pixels,
    )
    first = frames[0] if frames else None
    return HashSet(
        sha256=crypto.sha256(data),
        md5=crypto.md5(data),
        pdq=first.pdq if first else "",
        pdq_quality=first.quality if first else 0,
        vpdq=video.serialize(frames) if frames else None,
        vpdq_frames=tuple(f.pdq for f in frames),
    )
