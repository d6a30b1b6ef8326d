"""kafka-python plumbing: consumers, producers, topics. Nothing else imports kafka."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import (
    CorruptRecordError,
    IllegalStateError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumberError,
    ProducerFencedError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    UnknownError,
    UnknownProducerIdError,
)

from moderation.config import Settings
from moderation.errors import ConfigError, FatalError, InvalidInput
from moderation.events.delivery import (
    ACKNOWLEDGED,
    REFUSED,
    UNAVAILABLE,
    BrokerUnavailable,
    Headers,
    Record,
    SendResult,
)

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 30.0
FETCH_MAX_BYTES = 8 * 1024 * 1024  # per fetch request (Kafka's default: 50 MiB)
MAX_PARTITION_FETCH_BYTES = 1024 * 1024  # per partition (Kafka's default)
HEARTBEAT_MAX_MS = 1000


class RecordRefused(InvalidInput):
    """The broker (or the producer's own size check) refused this record for good:
    the same bytes can never be produced. Outboxes set such a row aside
    (storage/set_aside.py) instead of stopping."""

    code = "record_refused"


# Errors about one record, not about the topic, the cluster or this client's
# rights: retrying the same bytes cannot succeed, but the next record can. The
# producer itself raises MessageSizeTooLargeError for a record over
# max_request_size (1 MiB) before sending it; the broker answers the others
# (a record over the topic's max.message.bytes, a bad CRC, a timestamp out of
# range). Anything else that is not retriable (authorization, unknown topic,
# unsupported version...) is a configuration problem and stays fatal.
RECORD_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordError,
    InvalidTimestampError,
)


# Errors about the producer's own id and sequence numbers (the idempotent
# producer's state), which a broker that lost them answers: a replaced broker,
# an empty cluster at the same address. The producer cannot recover by itself
# (kafka-python's epoch bump fails there too and leaves it failing every send);
# a new one can. TopicSender replaces its producer and the record is retried.
PRODUCER_STATE_ERRORS: tuple[type[KafkaError], ...] = (
    UnknownProducerIdError,
    OutOfOrderSequenceNumberError,
    InvalidProducerEpochError,
    InvalidProducerIdMappingError,
    ProducerFencedError,
)


def classify_send_error(exc: KafkaError) -> str:
    """``refused`` (this record's problem), ``broker_unavailable`` (retry later)
    or ``fatal`` (configuration: stop the process)."""
    if isinstance(exc, RECORD_ERRORS):
        return REFUSED
    if isinstance(exc, PRODUCER_STATE_ERRORS):
        return UNAVAILABLE  # with a new producer (TopicSender)
    if isinstance(exc, UnknownError):
        # UNKNOWN_SERVER_ERROR: the broker failed for reasons of its own (tansu
        # answers it when two producers race for a new partition's first batch),
        # not a configuration problem: retry.
        return UNAVAILABLE
    # A bare KafkaError is what kafka-python gives the other records of a batch
    # the broker rejected because of one invalid record: they are fine, retry them.
    if getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError) or type(exc) is KafkaError:
        return UNAVAILABLE
    return "fatal"


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
    With KAFKA_GROUP_INSTANCE_ID the member is static (KIP-345): restarted
    within the session timeout under the same id, it gets its partitions back
    without a rebalance of the group (Apache Kafka 2.3+; docs/reliability.md).
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
    if settings.kafka_group_instance_id:
        config["group_instance_id"] = settings.kafka_group_instance_id
    config.update(overrides)
    return KafkaConsumer(topic or settings.uploads_topic, **config)


def leave_on_close(consumer: KafkaConsumer) -> None:
    """Make ``consumer.close()`` send LeaveGroup even for a static member.

    kafka-python sends none for a static member (KIP-345: its partitions wait
    for it through a restart, until the session timeout). A consumer that stops
    on purpose (SIGTERM: a scale-down, a rollout to a pod of another name)
    leaves anyway, naming its group.instance.id, so its partitions move at
    once; only a crash leaves them waiting for a restart. Reads kafka-python
    internals defensively: without them, close() behaves as kafka-python does."""
    coordinator = getattr(consumer, "_coordinator", None)
    if getattr(coordinator, "group_instance_id", None) and hasattr(coordinator, "is_dynamic_member"):
        coordinator.is_dynamic_member = lambda: True  # type: ignore[union-attr]


def make_producer(settings: Settings) -> KafkaProducer:
    """acks=all and one request in flight (per-key order holds across retries).
    Not idempotent: a broker that lost the producer's id (a replaced broker, a
    rebuilt cluster at the same address) would otherwise fail or stall every
    send (kafka-python resends for as long as ``delivery.timeout.ms``); the
    outboxes deliver at least once anyway, and a repeat carries the same
    idempotency key (docs/events.md)."""
    return KafkaProducer(
        bootstrap_servers=bootstrap(settings),
        acks="all",
        retries=5,
        linger_ms=2,
        max_in_flight_requests_per_connection=1,  # keeps per-key order across retries
        enable_idempotence=False,
        client_id="moderation",
    )


class ProducerSlot:
    """The producer that a process's senders share, made again when it may no
    longer produce: PRODUCER_STATE_ERRORS, or a record not acknowledged within
    SEND_TIMEOUT_S (a producer stuck on a broker that forgot it). The next send makes the new one (a fresh
    connection, metadata and producer id); the records that failed stay in
    their outboxes and are produced again."""

    def __init__(self, make: Callable[[], KafkaProducer]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._current: KafkaProducer | None = make()
        self.replacements = 0

    @property
    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._current is None:
                self._current = self._make()
            return self._current

    def replace(self, failed: Any) -> None:
        """Give up ``failed`` (closed without waiting); a no-op when another
        sender replaced it already."""
        with self._lock:
            if failed is None or id(self._current) != id(failed):
                return
            self._current = None
            self.replacements += 1
        log.warning(
            "Kafka producer replaced: the broker no longer knows its producer id "
            "(a new or restarted broker?); unacknowledged records are produced again",
            extra={"replacements": self.replacements},
        )
        try:
            failed.close(timeout=0)
        except Exception as exc:  # noqa: BLE001 - it is being thrown away
            log.debug("closing the replaced producer: %s", exc)

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.close(timeout=timeout)


class TopicSender:
    """Send records and wait for the broker's acknowledgement. Given a
    ``ProducerSlot``, a producer the broker no longer knows is replaced."""

    def __init__(
        self,
        producer: KafkaProducer | ProducerSlot,
        topic: str,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.slot = producer if isinstance(producer, ProducerSlot) else None
        self._producer: Any = producer
        self.topic = topic
        self.on_failure = on_failure  # called per record with "broker_unavailable" or "refused"

    @property
    def producer(self) -> KafkaProducer:
        """The producer the next send uses."""
        return self.slot.producer if self.slot is not None else self._producer  # type: ignore[no-any-return]

    def __call__(self, key: bytes, value: bytes, headers: Headers = ()) -> None:
        self.send_all([(key, value)], headers)

    def send_all(self, records: Sequence[tuple[bytes, bytes]], headers: Headers = ()) -> None:
        """Send records in order and wait until the broker acknowledged all of
        them; raises on the first that was not: ``BrokerUnavailable`` (retry
        later), ``RecordRefused`` (never producible) or ``FatalError``
        (configuration). Outboxes use ``send_each`` instead."""
        results = self.send_each([(key, value, headers) for key, value in records])
        for result in results:
            if result.status == UNAVAILABLE:
                message = f"broker did not acknowledge a record on {self.topic}: {result.reason}"
                raise BrokerUnavailable(message)
        for result in results:
            if result.status == REFUSED:
                raise RecordRefused(f"broker refused a record on {self.topic}: {result.reason}")

    def send_each(self, records: Sequence[Record]) -> list[SendResult]:
        """Send (key, value, headers) records in order and wait for every one's
        outcome (one round trip for a batch; the producer keeps one request in
        flight, so order holds across retries): one ``SendResult`` per record,
        in order. A refused record never holds up the others. Raises
        ``FatalError`` when the broker refuses for a reason that is not the
        record's (authorization, unknown topic): retrying cannot help and the
        process must stop loudly."""
        try:
            producer = self.producer
        except KafkaError as exc:  # a new producer could not be made
            return [self._failed(exc) for _ in records]
        futures: list[Any] = []
        for key, value, headers in records:
            try:
                futures.append(producer.send(self.topic, key=key, value=value, headers=list(headers)))
            except KafkaError as exc:  # the producer's own checks (size) fail before sending
                futures.append(exc)
        results = []
        broken = False
        for future in futures:
            try:
                if isinstance(future, KafkaError):
                    raise future
                future.get(timeout=SEND_TIMEOUT_S)
                results.append(SendResult(ACKNOWLEDGED))
            except KafkaError as exc:
                broken = broken or isinstance(exc, (*PRODUCER_STATE_ERRORS, KafkaTimeoutError))
                results.append(self._failed(exc))
        if self.slot is not None and broken:
            self.slot.replace(producer)
        return results

    def _failed(self, exc: KafkaError) -> SendResult:
        kind = classify_send_error(exc)
        if self.on_failure is not None:
            self.on_failure(UNAVAILABLE if kind == UNAVAILABLE else REFUSED)
        if kind == "fatal":
            raise FatalError(f"broker refused a record on {self.topic}: {exc!r}") from exc
        name, text = type(exc).__name__, str(exc)
        reason = text if name in text else f"{name}: {text}"  # kafka-python's broker errors name themselves
        return SendResult(kind, reason[:1000])


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
