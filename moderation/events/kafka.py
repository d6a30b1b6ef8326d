"""kafka-python plumbing: consumers, producers, topics. Nothing else imports kafka."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import IllegalStateError, KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from moderation.config import Settings
from moderation.errors import ConfigError, FatalError, TransientError

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0
FETCH_MAX_BYTES = 8 * 1024 * 1024  # per fetch request (Kafka's default: 50 MiB)
MAX_PARTITION_FETCH_BYTES = 1024 * 1024  # per partition (Kafka's default)
HEARTBEAT_MAX_MS = 1000


class BrokerUnavailable(TransientError):
    """The broker did not acknowledge a record in time (retried later)."""


def bootstrap(settings: Settings) -> list[str]:
    if not settings.kafka_bootstrap_servers:
        raise ConfigError(
            "KAFKA_BOOTSTRAP_SERVERS is not set. Point it at your brokers "
            "(e.g. kafka-1:9092,kafka-2:9092), or use `moderation up` for the embedded broker."
        )
    return [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]


def make_consumer(settings: Settings, topic: str | None = None, **overrides: Any) -> KafkaConsumer:
    """A group member with auto-commit off: offsets are committed only after work is durable.

    What a worker holds in memory besides the records in hand is bounded: the
    fetcher keeps at most one fetched response per partition, each at most
    MAX_PARTITION_FETCH_BYTES, and asks for at most FETCH_MAX_BYTES at a time
    (a larger single record still comes through). Heartbeats go at least every
    second, so a rebalance is noticed within one (see Worker.close).
    ``overrides``: kafka-python settings that replace these (tests)."""
    session_ms = settings.kafka_session_timeout_ms
    config: dict[str, Any] = dict(
        bootstrap_servers=bootstrap(settings),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.kafka_max_poll_records,
        session_timeout_ms=session_ms,
        heartbeat_interval_ms=max(min(session_ms // 3, HEARTBEAT_MAX_MS), 100),
        max_poll_interval_ms=max(settings.kafka_max_poll_interval_ms, session_ms),
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
        client_id="moderation-worker",
    )
    config.update(overrides)
    return KafkaConsumer(topic or settings.uploads_topic, **config)


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap(settings),
        acks="all",
        retries=5,
        linger_ms=2,
        max_in_flight_requests_per_connection=1,  # keeps per-key order across retries
        client_id="moderation",
    )


class TopicSender:
    """Send records and wait for the broker's acknowledgement."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def __call__(self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> None:
        self.send_all([(key, value)], headers)

    def send_all(
        self, records: Sequence[tuple[bytes, bytes]], headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Send records in order and wait until the broker acknowledged all of them
        (one round trip for a batch; the producer keeps one request in flight, so
        order holds across retries)."""
        try:
            futures = [
                self.producer.send(self.topic, key=key, value=value, headers=list(headers))
                for key, value in records
            ]
            for future in futures:
                future.get(timeout=SEND_TIMEOUT_S)
        except KafkaError as exc:
            if getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError):
                message = f"broker did not acknowledge a record on {self.topic}: {exc}"
                raise BrokerUnavailable(message) from exc
            # Authorization, unknown topic, record too large...: retrying cannot help.
            raise FatalError(f"broker refused a record on {self.topic}: {exc!r}") from exc


def ensure_topics(settings: Settings, partitions: int = 3) -> None:
    """Create the service's topics if missing (embedded mode and tests; production
    clusters usually manage topics themselves)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="moderation-admin")
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
            for name in (
                settings.uploads_topic,
                settings.decisions_topic,
                settings.dlq_topic,
                settings.appeals_topic,
            )
            if name not in existing
        ]
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def rewind(consumer: KafkaConsumer, tp: Any, offset: int) -> None:
    """Hand records back: the consumer's next poll returns them again from
    ``offset`` (if the partition is still its own; a revoked partition's next
    owner starts from the committed offset)."""
    if tp not in consumer.assignment():
        return
    try:
        consumer.seek(tp, offset)
    except (ValueError, IllegalStateError) as exc:  # revoked meanwhile
        log.warning("could not rewind partition %s: %s", tp.partition, exc)
