"""Every Prometheus metric, defined once, named moderation_<thing>_<unit>.

Metrics live on a ``Metrics`` object bound to a registry, so tests get a fresh
registry each and production uses the process default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
        self._bank_index_entries: Gauge | None = None
        self.readiness = ReadinessCollector()
        r.register(self.readiness)
        self.consumer_lag = Gauge(
            "moderation_consumer_lag_messages",
            "Records not yet consumed per assigned partition: the broker's high watermark minus "
            "this member's position.",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.publish_failures = Counter(
            "moderation_publish_failures_total",
            "Records the broker did not acknowledge, by outbox (decisions, dead_letters, uploads) and "
            "reason (broker_unavailable: retried later; refused: the broker rejected the record).",
            ["outbox", "reason"],
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

    def publish_failed(self, outbox: str) -> Callable[[str], None]:
        """A ``TopicSender`` failure callback counting under ``outbox``."""
        return lambda reason: self.publish_failures.labels(outbox, reason).inc()

    @property
    def bank_index_entries(self) -> Gauge:
        """Registered on first use, so only processes that hold a bank index
        (workers) export it: an index-less process exporting 0 would look like
        a worker that lost its banks."""
        if self._bank_index_entries is None:
            self._bank_index_entries = Gauge(
                "moderation_bank_index_entries",
                "Matchable bank entries held in this worker's index.",
                registry=self.registry,
            )
        return self._bank_index_entries


@dataclass(frozen=True)
class DatabaseGauges:
    """What the web role reads from the database at scrape time."""

    queue: Sequence[tuple[str, str, int, int]] = ()  # state, tier, priority, items
    sla: Sequence[tuple[str, str, int]] = ()  # tier, "near" | "breached", items
    outbox: Sequence[tuple[str, int, float]] = ()  # outbox, rows waiting to be produced, oldest age (s)
    set_aside: Sequence[tuple[str, int]] = ()  # outbox, rows the broker refused for good (set aside)
    banks: Sequence[tuple[str, str, int]] = ()  # bank, action, matchable entries


class DatabaseCollector(Collector):
    """Queue, SLA, outbox (pending and set aside) and bank gauges read from the database at scrape time.
    A database that does not answer yields no samples rather than a failed
    scrape (``moderation_ready{role="web"}`` says it is down)."""

    def __init__(self, read: Callable[[], DatabaseGauges]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            gauges = self._read()
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database blinked
            gauges = DatabaseGauges()
        yield _gauge(
            "moderation_queue_items",
            "Open review-queue items by state, tier and priority.",
            ["state", "tier", "priority"],
            gauges.queue,
        )
        yield _gauge(
            "moderation_queue_sla_items",
            "Open review-queue items within SLA_NEAR_HOURS of their deadline (near) or past it (breached).",
            ["tier", "sla"],
            gauges.sla,
        )
        yield _gauge(
            "moderation_outbox_pending",
            "Rows not yet acknowledged by the broker and not set aside, by outbox (decisions, dead_letters).",
            ["outbox"],
            [(name, count) for name, count, _age in gauges.outbox],
        )
        yield _gauge(
            "moderation_outbox_oldest_pending_seconds",
            "Age of the oldest row not yet acknowledged by the broker and not set aside (0 when none), "
            "by outbox.",
            ["outbox"],
            [(name, age) for name, _count, age in gauges.outbox],
        )
        yield _gauge(
            "moderation_outbox_set_aside",
            "Rows the broker refused for good, set aside until an admin retries or discards them "
            "(/admin/outbox), by outbox.",
            ["outbox"],
            gauges.set_aside,
        )
        yield _gauge(
            "moderation_bank_entries",
            "Matchable entries (active or quarantined) of every enabled bank.",
            ["bank", "action"],
            gauges.banks,
        )


def _gauge(
    name: str, documentation: str, labels: list[str], rows: Iterable[Sequence[Any]]
) -> GaugeMetricFamily:
    """A gauge family from rows of label values followed by the value."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for *values, value in rows:
        family.add_metric([str(v) for v in values], value)
    return family


ReadinessCheck = Callable[[], tuple[bool, Any]]


class ReadinessCollector(Collector):
    """``moderation_ready{role}``: 1 while the role's readiness check passes,
    evaluated at scrape time (so it is right even where nothing calls
    ``/readyz``). One per registry: ``moderation up`` adds all three roles."""

    def __init__(self) -> None:
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, role: str, check: ReadinessCheck) -> None:
        self._checks[role] = check

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "moderation_ready",
            "1 while this process's role is ready (its /readyz answers 200), else 0.",
            labels=["role"],
        )
        for role, check in sorted(self._checks.items()):
            try:
                ready = bool(check()[0])
            except Exception:  # noqa: BLE001 - a failing check is not ready, never a failed scrape
                ready = False
            family.add_metric([role], 1.0 if ready else 0.0)
        yield family
