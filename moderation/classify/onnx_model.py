"""One image model in ONNX Runtime, driven by its model card.

``preprocess`` turns a decoded BGR picture into the model's input row exactly
as the card says; ``run`` is a single ``InferenceSession.run`` over a stacked
batch. One session per model per process, created once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

from moderation.classify.cards import ModelCard
from moderation.errors import ConfigError

JPEG_ROUNDTRIP_QUALITY = 75


@dataclass(frozen=True)
class SessionOptions:
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per core)
    inter_op_threads: int = 1
    # ONNX Runtime's worker threads spin after each run by default, burning the
    # cores that the next model's session and the worker's decoding and hashing
    # need: with two models, spinning made the ensemble take 16.4 ms per image
    # instead of 8.8 (bench/classifier.py). Off unless asked for.
    allow_spinning: bool = False


def make_session(path: str, options: SessionOptions) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if options.allow_spinning else "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def preprocess(card: ModelCard, image_bgr: np.ndarray) -> np.ndarray:
    """The model's float32 input for one BGR uint8 picture (no batch axis)."""
    spec = card.input
    picture = resize(image_bgr, spec.resize, spec.interpolation)
    if spec.resize != spec.size:
        off = (spec.resize - spec.size) // 2
        picture = picture[off : off + spec.size, off : off + spec.size]
    if spec.jpeg_roundtrip:
        ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_ROUNDTRIP_QUALITY])
        decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            picture = decoded
    if spec.channels == "RGB":
        picture = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    tensor = picture.astype(np.float32)
    tensor -= np.asarray(spec.mean, dtype=np.float32)
    if spec.scale != 1.0:
        tensor *= np.float32(spec.scale)
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor)


def resize(image: np.ndarray, side: int, interpolation: str) -> np.ndarray:
    """``image`` resized to ``side`` x ``side`` (aspect ratio not kept)."""
    h, w = image.shape[:2]
    if (h, w) == (side, side):
        return image
    if interpolation == "bilinear_align_corners":
        # Output pixel i samples input (i * (in - 1) / (out - 1)): TensorFlow's
        # alignCorners. Within half a grey level of TF.js's float resize.
        scale = np.array([[(w - 1) / max(side - 1, 1), 0, 0], [0, (h - 1) / max(side - 1, 1), 0]])
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(image, scale, (side, side), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    shrinking = h >= side and w >= side
    # INTER_AREA low-pass filters when shrinking (like PIL's antialiased resize);
    # INTER_LINEAR would alias fine detail.
    flag = cv2.INTER_AREA if interpolation == "area" and shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (side, side), interpolation=flag)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class OnnxModel:
    """A model card plus its one ONNX Runtime session."""

    def __init__(self, card: ModelCard, options: SessionOptions = SessionOptions()) -> None:
        path = card.model_path()
        if not path.is_file():
            raise ConfigError(f"model {card.name}: file not found: {path}")
        self.card = card
        self.name = card.name
        self.path = path
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.sha256 = digest
        self.version = f"{card.name}-{digest[:12]}"
        self.session = make_session(str(path), options)
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        first_dim = model_input.shape[0] if model_input.shape else None
        self.fixed_batch = first_dim if isinstance(first_dim, int) else None
        outputs = self.session.get_outputs()
        self.output_name = outputs[0].name
        width = outputs[0].shape[-1] if outputs[0].shape else None
        if isinstance(width, int) and width != len(card.output.labels):
            raise ConfigError(
                f"model {card.name}: the ONNX output has {width} classes, the card lists "
                f"{len(card.output.labels)} labels"
            )
        self._sexual = list(card.sexual_indices)

    def preprocess_batch(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        spec = self.card.input
        shape = (3, spec.size, spec.size) if spec.layout == "NCHW" else (spec.size, spec.size, 3)
        batch = np.empty((len(images_bgr), *shape), dtype=np.float32)
        for i, image in enumerate(images_bgr):
            batch[i] = preprocess(self.card, image)
        return batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, labels)`` for a preprocessed batch."""
        if self.fixed_batch == 1 and len(batch) != 1:
            rows = [self.session.run([self.output_name], {self.input_name: row[None]})[0] for row in batch]
            probs = np.concatenate(rows)
        else:
            (probs,) = self.session.run([self.output_name], {self.input_name: batch})
        if self.card.output.activation == "softmax":
            probs = softmax(probs)
        return np.asarray(probs, dtype=np.float32)

    def score_rows(self, probs: np.ndarray) -> np.ndarray:
        """The model's score per row: the summed probability of its sexual labels."""
        return np.clip(probs[:, self._sexual].sum(axis=1), 0.0, 1.0)

    def classify(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        if not images_bgr:
            return np.zeros((0, len(self.card.output.labels)), dtype=np.float32)
        return self.run(self.preprocess_batch(images_bgr))
