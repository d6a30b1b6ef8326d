"""Nudity classifiers: model plugins chosen by configuration, combined into one score.

``CLASSIFIER_MODEL`` lists model cards (``models/<name>.toml``) with optional
weights; ``load_classifier`` builds one ONNX Runtime session per model, once per
process, and an :class:`~moderation.classify.ensemble.Ensemble` that scores a
batch of pictures with every model and combines the scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class ModelScore:
    model: str
    version: str  # <name>-<first 12 hex digits of the ONNX file's SHA-256>
    score: float
    labels: dict[str, float] = field(default_factory=dict, hash=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "score": round(self.score, 6),
            "labels": {k: round(v, 6) for k, v in self.labels.items()},
        }


@dataclass(frozen=True)
class Scores:
    """One picture's verdict from the classifier: the combined score and each model's."""

    score: float
    models: tuple[ModelScore, ...]

    @property
    def versions(self) -> str:
        return "+".join(m.version for m in self.models)

    def as_json(self) -> list[dict[str, Any]]:
        return [m.as_json() for m in self.models]


def highest(scores: Sequence[Scores]) -> Scores:
    """The verdict of the most suspicious picture (video frames, animation frames)."""
    return max(scores, key=lambda s: s.score)


def highest_per_item(scores: Sequence[Scores], counts: Sequence[int]) -> list[Scores]:
    """Scores of several items' pictures, in order (``counts[i]`` pictures for item
    i, each at least one) -> each item's most suspicious picture's verdict."""
    results, start = [], 0
    for count in counts:
        results.append(highest(scores[start : start + count]))
        start += count
    return results


# Model name -> that model's input rows for some pictures, stacked: (pictures, ...).
Tensors = dict[str, np.ndarray]


class Classifier(Protocol):
    """Preprocessing is separate from inference so that the worker prepares each
    event's tensors as it decodes it, and runs the models once per batch."""

    name: str
    version: str

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> Tensors:
        """Every model's input rows for these BGR uint8 pictures."""
        ...

    def run(self, tensors: Sequence[Tensors]) -> list[Scores]:
        """One Scores per picture of all ``tensors`` in order, from one
        ``InferenceSession.run`` per model."""
        ...

    def classify(self, images_bgr: Sequence[np.ndarray]) -> list[Scores]:
        """``run([preprocess(images_bgr)])``."""
        ...


class FixedScoreClassifier:
    """A classifier that returns a configured score: for tests and dry runs."""

    name = "fixed"
    version = "fixed-0"

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> Tensors:
        return {self.name: np.zeros(len(images_bgr), dtype=np.float32)}

    def run(self, tensors: Sequence[Tensors]) -> list[Scores]:
        count = sum(len(t[self.name]) for t in tensors)
        row = Scores(self.value, (ModelScore(self.name, self.version, self.value),))
        return [row for _ in range(count)]

    def classify(self, images_bgr: Sequence[np.ndarray]) -> list[Scores]:
        return self.run([self.preprocess(images_bgr)])


def load_classifier(spec: str, threads: int = 0, combine: str = "mean", models_dir: str = "") -> Classifier:
    """``fixed:0.3`` or a comma-separated list of ``model[=weight]`` (see
    docs/classifier.md); each model is a card name under models/ or a card path."""
    from moderation.classify.ensemble import load_ensemble
    from moderation.classify.onnx_model import SessionOptions

    spec = spec.strip()
    if spec.startswith("fixed:"):
        return FixedScoreClassifier(float(spec.split(":", 1)[1]))
    return load_ensemble(spec, SessionOptions(intra_op_threads=threads), combine, models_dir or None)
