"""One upload event -> signals -> verdict: fetch, decode, hash, match, classify, route.

No database or broker here: the worker persists and publishes what this returns,
and ``moderation hash``/tests call the same steps on local bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from moderation.classify import Classifier
from moderation.domain import HashSet, Match, UploadEvent, Verdict
from moderation.hashing import hash_media
from moderation.hashing.index import BankIndex
from moderation.media.decode import CONTENT_TYPES, decode_image
from moderation.media.fetch import MediaFetcher
from moderation.metrics import Metrics
from moderation.routing import RoutingPolicy, route


@dataclass(frozen=True)
class Analysis:
    event: UploadEvent
    data: bytes
    content_type: str
    hashes: HashSet
    matches: tuple[Match, ...]
    score: float | None
    model_version: str
    verdict: Verdict


class Pipeline:
    def __init__(
        self,
        fetcher: MediaFetcher,
        index: BankIndex,
        classifier: Classifier,
        policy: RoutingPolicy,
        max_image_pixels: int,
        metrics: Metrics,
    ) -> None:
        self.fetcher = fetcher
        self.index = index
        self.classifier = classifier
        self.policy = policy
        self.max_image_pixels = max_image_pixels
        self.metrics = metrics

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - started)

    def analyse(self, event: UploadEvent) -> Analysis:
        """Raises InvalidInput subclasses for media that can never be processed."""
        with self._stage("fetch"):
            data = self.fetcher.fetch(event.media_url)
        return self.analyse_bytes(event, data)

    def analyse_bytes(self, event: UploadEvent, data: bytes) -> Analysis:
        with self._stage("decode"):
            fmt, image = decode_image(data, self.max_image_pixels)
        with self._stage("hash"):
            hashes = hash_media(data, image)
        with self._stage("match"):
            matches = tuple(self.index.match(hashes))
        for m in matches:
            self.metrics.bank_matches.labels(m.bank, m.signal).inc()
        score = self._classify(image)
        verdict = route(matches, score, hashes.pdq_quality, self.policy)
        return Analysis(
            event=event,
            data=data,
            content_type=CONTENT_TYPES[fmt],
            hashes=hashes,
            matches=matches,
            score=score,
            model_version=self.classifier.version,
            verdict=verdict,
        )

    def _classify(self, image: np.ndarray) -> float:
        with self._stage("classify"):
            started = time.perf_counter()
            score = self.classifier.score(image)
            self.metrics.inference_seconds.labels(self.classifier.name).observe(time.perf_counter() - started)
        return score
