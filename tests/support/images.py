"""Synthetic test images: structured (good PDQ quality), deterministic, benign."""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_image(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A BGR image of random shapes on a gradient; different seeds look unrelated."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.zeros((h, w, 3), dtype=np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.002, 0.02, 2)
        base[..., c] = 127 + 100 * np.sin(x * fx + y * fy + rng.uniform(0, 6))
    img = base.clip(0, 255).astype(np.uint8)
    for _ in range(12):
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, center, int(rng.integers(15, h // 3)), color, -1)
        else:
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.rectangle(img, p1, p2, color, -1)
    return img


def encode(img: np.ndarray, ext: str = ".jpg", **params: int) -> bytes:
    flags: list[int] = []
    if ext == ".jpg":
        flags = [cv2.IMWRITE_JPEG_QUALITY, params.get("quality", 90)]
    ok, buf = cv2.imencode(ext, img, flags)
    assert ok, ext
    return buf.tobytes()


def reencoded_copy(img: np.ndarray, scale: float = 0.6, quality: int = 70) -> bytes:
    """A re-upload: resized and re-compressed, different bytes, same picture."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    return encode(small, ".jpg", quality=quality)
