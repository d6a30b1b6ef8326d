"""Upload events -> signals -> verdicts: fetch, decode, hash, match, classify, route.

Work is split so that the worker can classify many events in one batch:
``prepare`` does everything up to the classifier for one event (including the
models' preprocessing), ``classify`` scores the pictures of several prepared
events in one run per model, and
``finish`` routes. ``analyse`` chains the three for one event.

No database or broker here: the worker persists and publishes what this returns,
and the CLI and tests call the same steps on local bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from moderation.classify import Classifier, Scores, Tensors, highest_per_item
from moderation.classify.detector import NudeNetDetector
from moderation.domain import HashSet, Match, Route, UploadEvent, Verdict
from moderation.hashing import hash_media, hash_video_bytes
from moderation.hashing.index import BankIndex
from moderation.media.fetch import MediaFetcher
from moderation.media.load import Media, MediaLimits, load_media
from moderation.metrics import Metrics
from moderation.routing import RoutingPolicy, route

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """One event with everything but the classifier's verdict."""

    event: UploadEvent
    data: bytes
    media: Media
    hashes: HashSet
    matches: tuple[Match, ...]
    tensors: Tensors  # the classifier's input rows for media.pictures


@dataclass(frozen=True)
class Analysis:
    event: UploadEvent
    data: bytes
    content_type: str
    hashes: HashSet
    matches: tuple[Match, ...]
    classification: Scores
    verdict: Verdict
    regions: list[dict[str, Any]] | None = None  # body-part boxes for the console, if a detector ran

    @property
    def score(self) -> float:
        return self.classification.score

    @property
    def model_version(self) -> str:
        return self.classification.versions


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
        detector: NudeNetDetector | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.index = index
        self.classifier = classifier
        self.policy = policy
        self.limits = limits
        self.metrics = metrics
        self.variants = variants
        self.detector = detector

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - started)

    def analyse(self, event: UploadEvent) -> Analysis:
        """Raises InvalidInput subclasses for media that can never be processed."""
        prepared = self.prepare(event)
        return self.finish_batch([prepared], self.classify([prepared]))[0]

    def analyse_bytes(self, event: UploadEvent, data: bytes) -> Analysis:
        prepared = self.prepare_bytes(event, data)
        return self.finish_batch([prepared], self.classify([prepared]))[0]

    def prepare(self, event: UploadEvent) -> Prepared:
        with self._stage("fetch"):
            data = self.fetcher.fetch(event.media_url)
        return self.prepare_bytes(event, data)

    def prepare_bytes(self, event: UploadEvent, data: bytes) -> Prepared:
        with self._stage("decode"):
            media = load_media(data, self.limits)
        with self._stage("hash"):
            hashes = hash_loaded(data, media, self.limits, self.variants)
        with self._stage("match"):
            matches = tuple(self.index.match(hashes))
        for m in matches:
            self.metrics.bank_matches.labels(m.bank, m.signal).inc()
        with self._stage("preprocess"):
            tensors = self.classifier.preprocess(media.pictures)
        return Prepared(event, data, media, hashes, matches, tensors)

    def classify(self, prepared: Sequence[Prepared]) -> list[Scores]:
        """Each event's verdict: the highest over its picture or sampled frames,
        all pictures of all events scored in one run per model."""
        if not prepared:
            return []
        pictures = sum(len(item.media.pictures) for item in prepared)
        with self._stage("classify"):
            started = time.perf_counter()
            scores = self.classifier.run([item.tensors for item in prepared])
            elapsed = time.perf_counter() - started
        self.metrics.inference_seconds.labels(self.classifier.name).observe(elapsed)
        self.metrics.classify_batch_size.observe(pictures)
        return highest_per_item(scores, [len(item.media.pictures) for item in prepared])

    def finish(self, prepared: Prepared, classification: Scores) -> Analysis:
        verdict = route(prepared.matches, classification.score, prepared.hashes.pdq_quality, self.policy)
        return Analysis(
            event=prepared.event,
            data=prepared.data,
            content_type=prepared.media.content_type,
            hashes=prepared.hashes,
            matches=prepared.matches,
            classification=classification,
            verdict=verdict,
        )

    def rematch(self, analysis: Analysis) -> Analysis:
        """Match and route again with the index as it is now (after a bank change
        made while the event's batch was being handled)."""
        matches = tuple(self.index.match(analysis.hashes))
        verdict = route(matches, analysis.classification.score, analysis.hashes.pdq_quality, self.policy)
        return replace(analysis, matches=matches, verdict=verdict)

    def finish_batch(self, prepared: Sequence[Prepared], verdicts: Sequence[Scores]) -> list[Analysis]:
        """Route each event; then, with a body-part detector configured, find the
        regions of the still images a moderator will see, in one batch."""
        analyses = [self.finish(p, v) for p, v in zip(prepared, verdicts, strict=True)]
        if self.detector is None:
            return analyses
        shown = [
            i
            for i, a in enumerate(analyses)
            if a.verdict.route in (Route.REVIEW, Route.AUTO_REMOVE) and prepared[i].media.kind == "image"
        ]
        if not shown:
            return analyses
        with self._stage("detect"):
            try:
                found = self.detector.detect([prepared[i].media.pictures[0] for i in shown])
            except Exception:  # noqa: BLE001 - boxes only help the console; never lose the event
                log.exception("body-part detector failed; items keep full blur")
                return analyses
        for i, regions in zip(shown, found, strict=True):
            analyses[i] = replace(analyses[i], regions=[r.as_json() for r in regions])
        return analyses


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
