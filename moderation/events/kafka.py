"""kafka-python plumbing: consumers, producers, topics. Nothing else imports kafka."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
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

    def __init__(
        self, producer: KafkaProducer, topic: str, on_failure: Callable[[str], None] | None = None
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.on_failure = on_failure  # called with "broker_unavailable" or "refused"

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
            transient = getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError)
            if self.on_failure is not None:
                self.on_failure("broker_unavailable" if transient else "refused")
            if transient:
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


def partition_lag(consumer: KafkaConsumer) -> dict[tuple[str, int], int]:
    """Records not yet consumed per assigned partition: the high watermark the
    last fetch reported minus the consumer's position. Partitions the consumer
    has not fetched from yet are left out (their high watermark is unknown)."""
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            position = consumer.position(tp, timeout_ms=0)
        except (KafkaError, IllegalStateError, ValueError):
            continue
        if position is not None:
            lags[(tp.topic, tp.partition)] = max(0, int(high) - int(position))
    return lags


class LagReporter:
    """Sets ``moderation_consumer_lag_messages`` for a consumer's partitions at
    most every ``interval_s`` (each report may ask the broker for positions),
    and drops the partitions it no longer holds."""

    def __init__(self, consumer: KafkaConsumer, gauge: Any, interval_s: float = 5.0) -> None:
        self.consumer = consumer
        self.gauge = gauge
        self.interval_s = interval_s
        self.group = str(getattr(consumer, "config", {}).get("group_id") or "")
        self._reported: set[tuple[str, int]] = set()
        self._last = 0.0

    def maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        try:
            lags = partition_lag(self.consumer)
        except Exception as exc:  # noqa: BLE001 - a gauge must never stop the loop
            log.debug("consumer lag not measured: %s", exc)
            return
        for topic, partition in self._reported - set(lags):
            try:
                self.gauge.remove(self.group, topic, str(partition))
            except KeyError:
                pass
        for (topic, partition), lag in lags.items():
            self.gauge.labels(self.group, topic, str(partition)).set(lag)
        self._reported = set(lags)


def broker_reachable(settings: Settings, timeout_s: float = 1.0) -> bool:
    """Whether any bootstrap broker answers a Kafka ApiVersions request within
    ``timeout_s``: the broker part of a consumer's readiness. kafka-python keeps
    polling quietly while every broker is down, so the loop alone cannot tell,
    and a hung broker still accepts TCP connections, so a connect cannot either."""
    return any(_answers_api_versions(address, timeout_s) for address in bootstrap(settings))


def _answers_api_versions(address: str, timeout_s: float) -> bool:
    host, _, port = address.rpartition(":")
    client = b"moderation-readyz"
    # Request header v1: api_key 18 (ApiVersions), version 0, correlation id, client id.
    request = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(request)) + request)
            reply = b""
            while len(reply) < 8:  # response size, then the correlation id
                chunk = sock.recv(8 - len(reply))
                if not chunk:
                    return False
                reply += chunk
    except (OSError, ValueError):
        return False
    return struct.unpack(">i", reply[4:8])[0] == 7


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
