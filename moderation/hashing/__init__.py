"""Hash algorithms (pure: bytes/pixels -> hash) and the bank index."""

from __future__ import annotations

import numpy as np

from moderation.domain import HashSet
from moderation.hashing import crypto, pdq


def hash_media(data: bytes, image_bgr: np.ndarray) -> HashSet:
    """All signals for one decoded image: SHA-256 and MD5 of the bytes, PDQ of the pixels."""
    pdq_hex, quality = pdq.hash_image(image_bgr)
    return HashSet(sha256=crypto.sha256(data), md5=crypto.md5(data), pdq=pdq_hex, pdq_quality=quality)
