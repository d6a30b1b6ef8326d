"""The consumer loop of ``moderation worker``.

For each polled batch, every message gets exactly one durable outcome before the
batch's offsets are committed:

- invalid event or media -> produced to the dead-letter topic (acknowledged);
- otherwise -> an ``items`` row (plus decision rows in the outbox) committed to the
  database, then the item's decisions produced and acknowledged.

A redelivered event finds its row by ``event_id`` and only re-publishes decisions
that were not yet acknowledged. Transient failures (database, broker) are retried
with backoff and the offset is not committed meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moderation.errors import InvalidInput, ModerationError, ProcessingFailed, TransientError
from moderation.events.deadletter import dead_letter_headers
from moderation.events.uploads import parse_upload_event
from moderation.metrics import Metrics
from moderation.pipeline import Pipeline
from moderation.storage import banks, outbox, outcomes

log = logging.getLogger(__name__)

Send = Callable[..., None]
BANK_FEED_LOOKBACK = 100  # ids re-read each refresh: PostgreSQL may commit ids out of order
OUTBOX_SWEEP_SECONDS = 5.0
MAX_BACKOFF_S = 30.0
# route -> (action, source) of the decision the pipeline records by itself
AUTOMATIC_DECISIONS = {"auto_remove": ("remove", "hash_match"), "allow": ("allow", "classifier")}


class Worker:
    def __init__(
        self,
        consumer: KafkaConsumer,
        sessions: sessionmaker[Session],
        pipeline: Pipeline,
        send_decision: Send,
        send_dead_letter: Send,
        metrics: Metrics,
        publish_allow: bool = True,
        bank_refresh_seconds: float = 1.0,
    ) -> None:
        self.consumer = consumer
        self.sessions = sessions
        self.pipeline = pipeline
        self.send_decision = send_decision
        self.send_dead_letter = send_dead_letter
        self.metrics = metrics
        self.publish_allow = publish_allow
        self.bank_refresh_seconds = bank_refresh_seconds
        self.stop_event = threading.Event()
        self.last_loop_at = 0.0
        self._last_refresh = 0.0
        self._last_sweep = 0.0

    # -- lifecycle -------------------------------------------------------------
    def run(self) -> None:
        log.info("worker started", extra={"topics": sorted(self.consumer.subscription() or [])})
        try:
            while not self.stop_event.is_set():
                self.last_loop_at = time.monotonic()
                self._retrying("database", self.refresh_banks)
                self._retrying("broker", self.sweep_outbox)
                batch = self.consumer.poll(timeout_ms=500)
                for tp, records in batch.items():
                    if self._handle_partition(tp, records) is False:
                        return
        finally:
            log.info("worker stopping")

    def stop(self) -> None:
        self.stop_event.set()

    def _handle_partition(self, tp: TopicPartition, records: Sequence[Any]) -> bool:
        done = None
        for record in records:
            if not self._retrying("pipeline", partial(self.handle, record)):
                break  # stopping: leave the rest uncommitted for redelivery
            done = record.offset
        if done is not None:
            self._retrying(
                "broker",
                lambda: self.consumer.commit({tp: OffsetAndMetadata(done + 1, "", -1)}),
            )
        return not self.stop_event.is_set()

    def _retrying(self, dependency: str, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` until it succeeds or the worker stops; True if it succeeded."""
        backoff = 0.2
        while True:
            try:
                fn()
                return True
            except (TransientError, OperationalError) as exc:
                self.metrics.retries.labels(dependency).inc()
                log.warning("transient failure, retrying in %.1fs: %s", backoff, exc)
            except ModerationError:
                raise
            except Exception as exc:  # kafka errors on commit and the like
                if dependency == "pipeline":
                    raise
                self.metrics.retries.labels(dependency).inc()
                log.warning("%s failure, retrying in %.1fs: %s", dependency, backoff, exc)
            if self.stop_event.wait(backoff):
                return False
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    # -- one message -------------------------------------------------------------
    def handle(self, record: Any) -> str:
        """Give one Kafka record its durable outcome; returns the outcome name."""
        event_id = None
        try:
            event = parse_upload_event(record.value)
            event_id = event.event_id
            with self.sessions() as session:
                existing = outcomes.find_item_id(session, event.event_id)
            if existing is not None:
                self._publish([existing])
                self.metrics.events_consumed.labels("duplicate").inc()
                return "duplicate"
            self.refresh_banks()  # new bank entries match within bank_refresh_seconds
            analysis = self.pipeline.analyse(event)
            started = time.perf_counter()
            with self.sessions() as session:
                item_id, created = outcomes.record_analysis(session, analysis, self.publish_allow)
            self.metrics.stage_seconds.labels("persist").observe(time.perf_counter() - started)
        except InvalidInput as exc:
            self._dead_letter(record, exc, event_id)
            return "dead_letter"
        except (TransientError, OperationalError):
            raise  # retried by the caller, offset not committed
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the partition
            log.exception("unexpected error processing an event", extra={"event_id": event_id})
            failure = ProcessingFailed(f"{type(exc).__name__}: {exc}")
            self._dead_letter(record, failure, event_id)
            return "dead_letter"

        outcome = analysis.verdict.route.value if created else "duplicate"
        automatic = AUTOMATIC_DECISIONS.get(outcome)
        if automatic and (outcome != "allow" or self.publish_allow):
            self.metrics.decisions.labels(*automatic).inc()
        self._publish([item_id])
        self.metrics.events_consumed.labels(outcome).inc()
        log.info(
            "event processed",
            extra={
                "event_id": event_id,
                "outcome": outcome,
                "priority": analysis.verdict.priority,
                "score": analysis.score,
                "matches": len(analysis.matches),
            },
        )
        return outcome

    def _publish(self, item_ids: list[int]) -> None:
        started = time.perf_counter()
        outbox.publish_pending(
            self.sessions,
            self.send_decision,
            item_ids=item_ids,
            on_published=lambda _d: self.metrics.decisions_published.inc(),
        )
        self.metrics.stage_seconds.labels("publish").observe(time.perf_counter() - started)

    def _dead_letter(self, record: Any, error: ModerationError, event_id: str | None) -> None:
        headers = dead_letter_headers(error, record.topic, record.partition, record.offset, event_id)
        self.send_dead_letter(record.key or b"", record.value or b"", headers)
        self.metrics.dead_letters.labels(error.code).inc()
        self.metrics.events_consumed.labels("dead_letter").inc()
        log.warning(
            "event dead-lettered",
            extra={
                "error_class": error.code,
                "error": str(error)[:300],
                "partition": record.partition,
                "offset": record.offset,
                "event_id": event_id,
            },
        )

    # -- periodic work -------------------------------------------------------------
    def refresh_banks(self, force: bool = False) -> int:
        now = time.monotonic()
        if not force and now - self._last_refresh < self.bank_refresh_seconds:
            return 0
        index = self.pipeline.index
        added = 0
        with self.sessions() as session:
            while True:
                start = max(0, index.last_entry_id - BANK_FEED_LOOKBACK)
                entries = list(banks.entries_after(session, start))
                new = index.add(entries)
                added += new
                if len(entries) < 10_000:
                    break
        self._last_refresh = now
        if added:
            log.info("bank index updated", extra={"added": added, "size": len(index)})
        return added

    def sweep_outbox(self) -> int:
        now = time.monotonic()
        if now - self._last_sweep < OUTBOX_SWEEP_SECONDS:
            return 0
        self._last_sweep = now
        return outbox.publish_pending(
            self.sessions, self.send_decision, on_published=lambda _d: self.metrics.decisions_published.inc()
        )
