"""The appeals consumer (``moderation appeals``): appeal events reopen decided items.

Records on ``APPEALS_TOPIC`` (JSON, keyed by content id; docs/events.md) are
read by the consumer group ``moderation-appeals``. Each record gets one durable
outcome before its offset is committed:

- a valid appeal of a decided item: the appeal row and the reopened item,
  committed in one transaction (storage/appeals.py). The same ``appeal_id``
  again changes nothing, so redelivery is harmless;
- an appeal that can never be applied (not JSON, fields missing, unknown item
  or content, an item that is not decided): logged, counted in
  ``moderation_appeals_total{outcome="invalid"}``, stored in ``dead_letters``
  and produced to ``DLQ_TOPIC`` with error class ``invalid_appeal``. Not retried;
- a transient failure (database, broker): nothing is committed, the consumer
  is rewound to the record, and it is tried again after a pause (0.2 s
  doubling to at most 1 s, so an appeal waits at most about a second once the
  dependency is back) while the consumer keeps its place in the group. The
  outage is logged when it begins, then at most every 30 s (events/outage.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from moderation.config import Settings
from moderation.errors import InvalidInput, ModerationError, RequestError, TransientError
from moderation.events.kafka import BrokerUnavailable, LagReporter, leave_on_close, rewind
from moderation.events.outage import Outage
from moderation.metrics import Metrics
from moderation.storage import appeals, deadletters

log = logging.getLogger(__name__)

APPEALS_GROUP = "moderation-appeals"
MAX_RECORD_BYTES = 64 * 1024  # an appeal is a few fields and a statement of at most 5000 characters
ACTOR = "kafka:appeals"  # the audit log's actor for appeals read from the topic


class InvalidAppeal(InvalidInput):
    """An appeal event that can never be applied: dead-lettered, never retried."""

    code = "invalid_appeal"


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: our TransientError, the broker, and database errors other
    than bad data (an IntegrityError is a concurrent submission of the same
    appeal, which the retry then finds)."""
    if isinstance(exc, TransientError | KafkaError):
        return True
    return isinstance(exc, DBAPIError) and not isinstance(exc, DataError)


class AppealConsumer:
    def __init__(
        self,
        consumer: KafkaConsumer,
        sessions: sessionmaker[Session],
        settings: Settings,
        send_dead_letter: deadletters.SendWithHeaders,
        metrics: Metrics,
    ) -> None:
        self.consumer = consumer
        self.sessions = sessions
        self.settings = settings
        self.send_dead_letter = send_dead_letter
        self.metrics = metrics
        self.stop_event = threading.Event()
        self.last_loop_at = 0.0  # for /healthz: the loop is alive
        self.outage: str | None = None  # the dependency that is down, while backing off
        self._outages = Outage(log, "appeals")  # the retry pauses of events/outage.py
        self._lag = LagReporter(consumer, metrics.consumer_lag)

    def run(self) -> None:
        log.info("appeals consumer started", extra={"topic": self.settings.appeals_topic})
        while not self.stop_event.is_set():
            self.last_loop_at = time.monotonic()
            try:
                self.poll_once()
            except KafkaError as exc:  # polling itself failed: the broker is away
                self._back_off(exc, "broker")
            self._lag.maybe_report()
        log.info("appeals consumer stopping")

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Handle what one poll returns; returns how many records got an outcome."""
        batch = self.consumer.poll(timeout_ms=timeout_ms)
        pending = list(batch.items())
        handled = 0
        for index, (tp, records) in enumerate(pending):
            done, failure = self._handle_partition(records)
            handled += done
            if done:
                self._commit(tp, records[done - 1].offset + 1)
            if done < len(records):
                # Hand back what has no outcome yet, here and in the partitions after it.
                rewind(self.consumer, tp, records[done].offset)
                for later_tp, later in pending[index + 1 :]:
                    rewind(self.consumer, later_tp, later[0].offset)
                if failure is not None:
                    broker = isinstance(failure, KafkaError | BrokerUnavailable)  # a dead letter not produced
                    self._back_off(failure, "broker" if broker else "database")
                return handled
        if self.outage is not None:
            lasted = self._outages.back()
            if lasted is not None:
                log.info("appeals: %s available again", self.outage, extra={"outage_s": round(lasted, 1)})
        self._outages.cleared()
        self.outage = None
        return handled

    def _handle_partition(self, records: list[Any]) -> tuple[int, BaseException | None]:
        for done, record in enumerate(records):
            if self.stop_event.is_set():
                return done, None
            self.last_loop_at = time.monotonic()
            try:
                self.handle(record)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                return done, exc
        return len(records), None

    def handle(self, record: Any) -> str:
        """Give one record its durable outcome: reopened, duplicate, invalid (a dead
        letter) or failed (an unexpected error of this record's: a dead letter too)."""
        appeal_id: str | None = None
        try:
            request = parse_record(record)
            appeal_id = request.appeal_id
            with self.sessions() as session:
                result = appeals.submit(session, self.settings, request, source="kafka", actor=ACTOR)
                session.commit()
            outcome = "reopened" if result.created else "duplicate"
            log.info("appeal %s", outcome, extra={"appeal_id": appeal_id, "item_id": result.appeal.item_id})
        except RequestError as exc:  # invalid, unknown item, not decided: never retried
            self._dead_letter(record, InvalidAppeal(str(exc)), appeal_id)
            outcome = "invalid"
        except Exception as exc:
            if is_transient(exc):
                raise
            # Anything else is this record's own problem: a dead letter, not a consumer
            # that stops on the same record at every redelivery (as the worker does).
            if not isinstance(exc, DBAPIError):
                log.exception("unexpected error handling an appeal", extra={"appeal_id": appeal_id})
            self._dead_letter(record, deadletters.unexpected_failure(exc), appeal_id)
            outcome = "failed"
        self.metrics.appeals.labels("kafka", outcome).inc()
        return outcome

    def _dead_letter(self, record: Any, error: ModerationError, appeal_id: str | None) -> None:
        log.error(
            "appeal dead-lettered: %s",
            error,
            extra={"appeal_id": appeal_id, "partition": record.partition, "offset": record.offset},
        )
        with self.sessions() as session:
            row, created = deadletters.record_dead_letter(session, record, error, appeal_id)
            row_id = row.id
        if created:
            self.metrics.dead_letters.labels(error.code).inc()
        deadletters.publish_pending(self.sessions, self.send_dead_letter, ids=[row_id])

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partition moved: its next owner redelivers, and appeals are idempotent.
            log.warning("appeal offset commit skipped after a rebalance: %s", exc)

    def _back_off(self, exc: BaseException, dependency: str) -> None:
        pause = self._outages.failed(dependency, exc)
        self.metrics.retries.labels(dependency).inc()
        self.outage = dependency
        self.stop_event.wait(pause)

    def close(self, settle_s: float = 5.0) -> None:
        """Leave the group after ``run`` returned. Like the worker (Worker.close),
        let a rebalance in progress settle first, with every partition paused:
        the embedded broker's group gets stuck if a member leaves mid-rebalance."""
        started = time.monotonic()
        try:
            grace = float(getattr(self.consumer, "config", {}).get("heartbeat_interval_ms", 1000)) / 1000
            while time.monotonic() - started < min(grace, settle_s):
                assigned = self.consumer.assignment()
                if assigned:
                    self.consumer.pause(*assigned)
                self.consumer.poll(timeout_ms=100)
        except Exception as exc:  # noqa: BLE001 - leaving must not fail: the session timeout covers it
            log.warning("could not settle the appeals group before leaving: %s", exc)
        finally:
            leave_on_close(self.consumer)
            self.consumer.close()


def parse_record(record: Any) -> appeals.AppealRequest:
    """The appeal in a record's value (JSON); RequestError when it is not one."""
    value = record.value
    if not value:
        raise RequestError("empty record: an appeal is a JSON object")
    if len(value) > MAX_RECORD_BYTES:
        raise RequestError(f"appeal record of {len(value)} bytes is larger than {MAX_RECORD_BYTES}")
    try:
        body = json.loads(value)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"appeal record is not JSON: {exc}") from None
    return appeals.parse_request(body, record.key)


def build_appeal_consumer(
    settings: Settings, metrics: Metrics, group_id: str = APPEALS_GROUP
) -> AppealConsumer:
    """The consumer and its own producer (dead letters), from settings."""
    from moderation.events import kafka
    from moderation.storage.db import make_sessionmaker, role_engine

    consumer = kafka.make_consumer(
        settings, settings.appeals_topic, group_id=group_id, client_id="moderation-appeals"
    )
    producer = kafka.ProducerSlot(lambda: kafka.make_producer(settings))
    return AppealConsumer(
        consumer,
        make_sessionmaker(role_engine(settings)),
        settings,
        kafka.TopicSender(producer, settings.dlq_topic, metrics.publish_failed("dead_letters")),
        metrics,
    )
