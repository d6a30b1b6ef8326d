"""The consumer loop of ``moderation worker``.

Each record gets exactly one durable outcome before its offset is committed:

- invalid event or media -> a ``dead_letters`` row, then produced to the
  dead-letter topic and acknowledged;
- otherwise -> an ``items`` row (plus decision rows in the outbox) committed to
  the database, then the item's decisions produced and acknowledged.

The offset is committed after every record, so a slow partition keeps its
progress. A redelivered record finds its row (by ``event_id``, or by source
position for dead letters) and only re-produces what was not yet acknowledged.
Transient failures (database, broker) are retried with backoff and the offset is
not committed meanwhile; a worker asked to stop finishes the record in hand.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.errors import FatalError, InvalidInput, ModerationError, ProcessingFailed, TransientError
from moderation.events.uploads import parse_upload_event
from moderation.metrics import Metrics
from moderation.pipeline import Analysis, Pipeline
from moderation.storage import deadletters, outbox, outcomes
from moderation.storage.bank_feed import IndexFeeder
from moderation.storage.flood import FloodPolicy

log = logging.getLogger(__name__)

Send = Callable[..., None]
OUTBOX_SWEEP_SECONDS = 5.0
MAX_BACKOFF_S = 30.0
# route -> (action, source) of the decision the pipeline records by itself
AUTOMATIC_DECISIONS = {"auto_remove": ("remove", "hash_match"), "allow": ("allow", "classifier")}


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: our TransientError, and database errors other than
    bad data for this one row."""
    if isinstance(exc, TransientError):
        return True
    return isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError | DataError)


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
        flood: FloodPolicy | None = None,
    ) -> None:
        self.consumer = consumer
        self.sessions = sessions
        self.pipeline = pipeline
        self.send_decision = send_decision
        self.send_dead_letter = send_dead_letter
        self.metrics = metrics
        self.publish_allow = publish_allow
        self.bank_refresh_seconds = bank_refresh_seconds
        self.flood = flood or FloodPolicy()
        self.feeder = IndexFeeder(sessions, pipeline.index)
        self.stop_event = threading.Event()
        self.last_loop_at = 0.0
        self._last_refresh = 0.0
        self._last_sweep = 0.0
        self._partition_lost = False

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
                    if not self._handle_partition(tp, records):
                        break  # stopping, or the assignment changed: poll again
        finally:
            log.info("worker stopping")

    def stop(self) -> None:
        self.stop_event.set()

    def _handle_partition(self, tp: TopicPartition, records: list[Any]) -> bool:
        """Handle and commit record by record; False to stop reading this batch."""
        for record in records:
            if self.stop_event.is_set():
                return False
            self.last_loop_at = time.monotonic()
            if not self._retrying("pipeline", partial(self.handle, record)):
                return False  # stopping: the record stays uncommitted and is redelivered
            self._partition_lost = False
            committed = self._retrying("broker", partial(self._commit, tp, record.offset + 1))
            if not committed or self._partition_lost:
                return False
        return True

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.consumer.assignment():
            self._partition_lost = True
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partition moved to another worker. Its new owner redelivers from
            # the last committed offset; outcomes are idempotent, so nothing is lost
            # or doubled. Stop reading this batch and poll again.
            self._partition_lost = True
            log.warning("offset commit skipped after a rebalance: %s", exc, extra={"partition": tp.partition})

    def _retrying(self, dependency: str, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` until it succeeds or the worker stops; True if it succeeded.
        Fatal errors propagate and stop the worker."""
        backoff = 0.2
        while True:
            try:
                fn()
                return True
            except FatalError:
                raise
            except Exception as exc:  # noqa: BLE001 - transient by elimination
                if dependency == "pipeline" and not is_transient(exc):
                    raise
                self.metrics.retries.labels(dependency).inc()
                log.warning("%s failure, retrying in %.1fs: %s", dependency, backoff, exc)
            if self.stop_event.wait(backoff):
                return False
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    # -- one record ------------------------------------------------------------
    def handle(self, record: Any) -> str:
        """Give one Kafka record its durable outcome; returns the outcome name.

        Transient and fatal errors propagate (the caller retries or stops); any
        other error is this record's problem and dead-letters it, so one poison
        message never stops its partition."""
        with self.sessions() as session:
            earlier = deadletters.find(session, record)
        if earlier is not None:
            return self._dead_letter_again(earlier.id)
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
            return self._persist_and_publish(self.pipeline.analyse(event))
        except InvalidInput as exc:
            return self._dead_letter(record, exc, event_id)
        except FatalError:
            raise
        except Exception as exc:  # noqa: BLE001
            if is_transient(exc):
                raise
            if isinstance(exc, DBAPIError):
                # Never log or forward the statement's parameters: they hold media bytes.
                failure = ProcessingFailed(f"database refused the outcome: {type(exc.orig).__name__}")
            else:
                log.exception("unexpected error handling a record", extra={"event_id": event_id})
                failure = ProcessingFailed(f"{type(exc).__name__}: {exc}")
            return self._dead_letter(record, failure, event_id)

    def _persist_and_publish(self, analysis: Analysis) -> str:
        started = time.perf_counter()
        with self.sessions() as session:
            item_id, created, quarantined = outcomes.record_analysis(
                session, analysis, self.publish_allow, self.flood
            )
        self.metrics.stage_seconds.labels("persist").observe(time.perf_counter() - started)
        for entry_id in quarantined:
            self.metrics.bank_entries_quarantined.inc()
            log.warning("bank entry quarantined by flood control", extra={"entry_id": entry_id})
        if quarantined:
            # This worker stops acting on the entry with its very next upload;
            # the others follow within BANK_REFRESH_SECONDS.
            self._retrying("database", lambda: self.refresh_banks(force=True))
        outcome = analysis.verdict.route.value if created else "duplicate"
        automatic = AUTOMATIC_DECISIONS.get(outcome)
        if automatic and (outcome != "allow" or self.publish_allow):
            self.metrics.decisions.labels(*automatic).inc()
        self._publish([item_id])
        self.metrics.events_consumed.labels(outcome).inc()
        log.info(
            "event processed",
            extra={
                "event_id": analysis.event.event_id,
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

    def _dead_letter(self, record: Any, error: ModerationError, event_id: str | None) -> str:
        with self.sessions() as session:
            row, created = deadletters.record_dead_letter(session, record, error, event_id)
        if not created:
            return self._dead_letter_again(row.id)
        # Counted once stored: a broker outage while producing it must not hide it.
        self.metrics.dead_letters.labels(error.code).inc()
        self.metrics.events_consumed.labels("dead_letter").inc()
        deadletters.publish_pending(self.sessions, self.send_dead_letter, ids=[row.id])
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
        return "dead_letter"

    def _dead_letter_again(self, dead_letter_id: int) -> str:
        deadletters.publish_pending(self.sessions, self.send_dead_letter, ids=[dead_letter_id])
        self.metrics.events_consumed.labels("duplicate").inc()
        return "duplicate"

    # -- periodic work ---------------------------------------------------------
    def refresh_banks(self, force: bool = False) -> int:
        """Apply bank changes made since the last refresh (all entries on the first)."""
        now = time.monotonic()
        if not force and now - self._last_refresh < self.bank_refresh_seconds:
            return 0
        index = self.pipeline.index
        applied = self.feeder.refresh()
        self._last_refresh = now
        self.metrics.bank_index_entries.set(len(index))
        if applied:
            log.info("bank index updated", extra={"applied": applied, "size": len(index)})
        return applied

    def sweep_outbox(self) -> int:
        now = time.monotonic()
        if now - self._last_sweep < OUTBOX_SWEEP_SECONDS:
            return 0
        self._last_sweep = now
        published = outbox.publish_pending(
            self.sessions, self.send_decision, on_published=lambda _d: self.metrics.decisions_published.inc()
        )
        return published + deadletters.publish_pending(self.sessions, self.send_dead_letter)
