"""PDQ perceptual hash (Meta's algorithm via ``pdqhash``) and Hamming distance.

Hex format: 64 lowercase hex characters, bit 0 of the hash vector is the most
significant bit of the first character, the same as python-threatexchange, so
hashes interoperate with StopNCII/ThreatExchange lists.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
import pdqhash

PDQ_HEX_LEN = 64
_HEX = re.compile(r"^[0-9a-f]{64}$")
# PDQ downsamples internally; hashing a 512px version gives the same hash as the
# reference CLI (which also resizes) at a fraction of the cost for large photos.
_MAX_SIDE = 512

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hash_image(image_bgr: np.ndarray) -> tuple[str, int]:
    """PDQ hex and quality (0..100) of a BGR uint8 image."""
    h, w = image_bgr.shape[:2]
    scale = _MAX_SIDE / max(h, w)
    if scale < 1.0:
        image_bgr = cv2.resize(
            image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    vector, quality = pdqhash.compute(rgb)
    return vector_to_hex(vector), int(quality)


def vector_to_hex(vector: np.ndarray) -> str:
    return np.packbits(np.asarray(vector, dtype=np.uint8)).tobytes().hex()


def is_pdq_hex(value: str) -> bool:
    return bool(_HEX.match(value))


def hex_to_bytes(value: str) -> np.ndarray:
    """32 packed bytes of a PDQ hex string."""
    if not is_pdq_hex(value):
        raise ValueError(f"not a PDQ hash (64 lowercase hex characters): {value!r}")
    return np.frombuffer(bytes.fromhex(value), dtype=np.uint8)


def distance(a: str, b: str) -> int:
    return int(_POPCOUNT[np.bitwise_xor(hex_to_bytes(a), hex_to_bytes(b))].sum())


def distances(query: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """Hamming distances from one packed hash (32,) to many (N, 32)."""
    if packed.shape[0] == 0:
        return np.zeros(0, dtype=np.int32)
    return _POPCOUNT[np.bitwise_xor(packed, query)].sum(axis=1, dtype=np.int32)
