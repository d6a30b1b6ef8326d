"""Every Prometheus metric, defined once, named moderation_<thing>_<unit>.

Metrics live on a ``Metrics`` object bound to a registry, so tests get a fresh
registry each and production uses the process default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

STAGES = ("fetch", "decode", "hash", "match", "preprocess", "classify", "detect", "persist", "publish")
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        r = self.registry
        self.events_consumed = Counter(
            "moderation_events_consumed_total",
            "Upload events consumed, by outcome (auto_remove, review, allow, dead_letter, duplicate).",
            ["outcome"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "moderation_stage_duration_seconds",
            "Time spent per processing stage of one upload event.",
            ["stage"],
            buckets=_FAST,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "moderation_model_inference_seconds",
            "Classifier time per batch (preprocessing and every model's ONNX Runtime run), by model set.",
            ["model"],
            buckets=_FAST,
            registry=r,
        )
        self.classify_batch_size = Histogram(
            "moderation_classify_batch_pictures",
            "Pictures scored per classifier batch (images, video and animation frames of several events).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.bank_matches = Counter(
            "moderation_bank_matches_total",
            "Bank entries matched by uploads, by bank and signal.",
            ["bank", "signal"],
            registry=r,
        )
        self.decisions = Counter(
            "moderation_decisions_total",
            "Decisions recorded, by action and source.",
            ["action", "source"],
            registry=r,
        )
        self.decisions_published = Counter(
            "moderation_decisions_published_total",
            "Decision events acknowledged by the broker.",
            registry=r,
        )
        self.dead_letters = Counter(
            "moderation_dead_letters_total",
            "Events sent to the dead-letter topic, by error class.",
            ["error_class"],
            registry=r,
        )
        self.bank_entries_quarantined = Counter(
            "moderation_bank_entries_quarantined_total",
            "Bank entries quarantined by flood control (their automatic action falls back to review).",
            registry=r,
        )
        self.bank_index_entries = Gauge(
            "moderation_bank_index_entries",
            "Matchable bank entries held in this worker's index.",
            registry=r,
        )
        self.retries = Counter(
            "moderation_transient_errors_total",
            "Transient failures that made the worker back off and retry, by dependency.",
            ["dependency"],
            registry=r,
        )
        self.appeals = Counter(
            "moderation_appeals_total",
            "Appeals received, by source (api, kafka) and outcome (reopened, duplicate: an appeal_id "
            "seen before, invalid: dead-lettered appeal events).",
            ["source", "outcome"],
            registry=r,
        )


QueueDepthFn = Callable[[], Sequence[tuple[str, str, int, int]]]


class QueueDepthCollector(Collector):
    """``moderation_queue_items`` read from the database at scrape time."""

    def __init__(self, depth: QueueDepthFn) -> None:
        self._depth = depth

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "moderation_queue_items",
            "Open review-queue items by state, tier and priority.",
            labels=["state", "tier", "priority"],
        )
        try:
            rows = self._depth()
        except Exception:  # a scrape must not fail because the database blinked
            rows = []
        for state, tier, priority, count in rows:
            family.add_metric([state, tier, str(priority)], count)
        yield family
