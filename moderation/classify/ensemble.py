"""Several models, one score: weighted mean (default) or maximum of the models'
scores. Each model scores the whole batch in one ``InferenceSession.run``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moderation.classify import ModelScore, Scores, Tensors
from moderation.classify.cards import DEFAULT_MODELS_DIR, find_card
from moderation.classify.onnx_model import OnnxModel, SessionOptions
from moderation.errors import ConfigError

ALIASES = {"opennsfw": "open_nsfw"}  # the name CLASSIFIER_MODEL took before model cards
COMBINE_RULES = ("mean", "max")


@dataclass(frozen=True)
class Member:
    model: OnnxModel
    weight: float


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """``open_nsfw=2,nsfwjs_mobilenet_v2_mid`` -> [(open_nsfw, 2.0), (nsfwjs_mobilenet_v2_mid, 1.0)]."""
    members: list[tuple[str, float]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, weight_text = part.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        try:
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            message = f"CLASSIFIER_MODEL: {name!r} has a weight that is not a number: {weight_text!r}"
            raise ConfigError(message) from None
        if weight <= 0:
            raise ConfigError(f"CLASSIFIER_MODEL: weight of {name!r} must be greater than 0")
        if any(name == seen for seen, _ in members):
            raise ConfigError(f"CLASSIFIER_MODEL: {name!r} is listed twice")
        members.append((name, weight))
    if not members:
        raise ConfigError("CLASSIFIER_MODEL names no model")
    return members


class Ensemble:
    def __init__(self, members: Sequence[Member], combine: str = "mean") -> None:
        if combine not in COMBINE_RULES:
            raise ConfigError(f"CLASSIFIER_COMBINE={combine!r}: expected one of {', '.join(COMBINE_RULES)}")
        self.members = list(members)
        self.combine = combine
        self.name = "+".join(m.model.name for m in self.members)
        self.version = "+".join(m.model.version for m in self.members)
        total = sum(m.weight for m in self.members)
        self._weights = np.array([m.weight / total for m in self.members], dtype=np.float64)

    @property
    def models(self) -> list[OnnxModel]:
        return [m.model for m in self.members]

    def combine_scores(self, per_model: np.ndarray) -> np.ndarray:
        """``(models, N)`` model scores -> ``(N,)`` combined scores."""
        if self.combine == "max":
            return np.asarray(per_model.max(axis=0))
        return np.asarray(self._weights @ per_model)

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> Tensors:
        return {m.model.name: m.model.preprocess_batch(images_bgr) for m in self.members}

    def run(self, tensors: Sequence[Tensors]) -> list[Scores]:
        if not tensors or not sum(len(t[self.members[0].model.name]) for t in tensors):
            return []
        probs = []
        for m in self.members:
            parts = [t[m.model.name] for t in tensors]
            probs.append(m.model.run(parts[0] if len(parts) == 1 else np.concatenate(parts)))
        return self.assemble(probs)

    def classify(self, images_bgr: Sequence[np.ndarray]) -> list[Scores]:
        return self.run([self.preprocess(images_bgr)])

    def assemble(self, probs: Sequence[np.ndarray]) -> list[Scores]:
        """Scores from each member's ``(N, labels)`` probabilities."""
        per_model = np.stack([m.model.score_rows(p) for m, p in zip(self.members, probs, strict=True)])
        combined = self.combine_scores(per_model)
        results = []
        for i, total in enumerate(combined):
            models = tuple(
                ModelScore(
                    model=m.model.name,
                    version=m.model.version,
                    score=float(per_model[k, i]),
                    labels={label: float(p[i, j]) for j, label in enumerate(m.model.card.output.labels)},
                )
                for k, (m, p) in enumerate(zip(self.members, probs, strict=True))
            )
            results.append(Scores(float(np.clip(total, 0.0, 1.0)), models))
        return results


def load_ensemble(
    spec: str,
    options: SessionOptions = SessionOptions(),
    combine: str = "mean",
    models_dir: str | None = None,
) -> Ensemble:
    from pathlib import Path

    folder = Path(models_dir) if models_dir else DEFAULT_MODELS_DIR
    members = [
        Member(OnnxModel(find_card(name, folder), options), weight) for name, weight in parse_spec(spec)
    ]
    return Ensemble(members, combine)
