"""One upload event -> signals -> verdict: fetch, decode, hash, match, classify, route.

No database or broker here: the worker persists and publishes what this returns,
and ``moderation hash``/tests call the same steps on local bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from moderation.classify import Classifier
from moderation.domain import HashSet, Match, UploadEvent, Verdict
from moderation.hashing import hash_media, hash_video_bytes
from moderation.hashing.index import BankIndex
from moderation.media.fetch import MediaFetcher
from moderation.media.load import Media, MediaLimits, load_media
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
        limits: MediaLimits,
        metrics: Metrics,
        variants: bool = True,
    ) -> None:
        self.fetcher = fetcher
        self.index = index
        self.classifier = classifier
        self.policy = policy
        self.limits = limits
        self.metrics = metrics
        self.variants = variants

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
            media = load_media(data, self.limits)
        with self._stage("hash"):
            hashes = hash_loaded(data, media, self.limits, self.variants)
        with self._stage("match"):
            matches = tuple(self.index.match(hashes))
        for m in matches:
            self.metrics.bank_matches.labels(m.bank, m.signal).inc()
        score = self._classify(media)
        verdict = route(matches, score, hashes.pdq_quality, self.policy)
        return Analysis(
            event=event,
            data=data,
            content_type=media.content_type,
            hashes=hashes,
            matches=matches,
            score=score,
            model_version=self.classifier.version,
            verdict=verdict,
        )

    def _classify(self, media: Media) -> float:
        """The highest score over the picture (or the sampled video frames)."""
        with self._stage("classify"):
            started = time.perf_counter()
            score = max(self.classifier.score(p) for p in media.pictures)
            self.metrics.inference_seconds.labels(self.classifier.name).observe(time.perf_counter() - started)
        return score


def hash_loaded(data: bytes, media: Media, limits: MediaLimits, variants: bool) -> HashSet:
    """Every signal of one loaded upload (shared by the worker and the CLI)."""
    if media.kind == "video":
        return hash_video_bytes(
            data,
            seconds_per_hash=limits.video_seconds_per_hash,
            max_seconds=limits.video_max_seconds,
            min_quality=limits.video_frame_min_quality,
            max_pixels=limits.max_image_pixels,
        )
    return hash_media(data, media.pictures[0], variants=variants)
