"""TopicSender's error contract, its per-record results (send_each) and the
publish-failure counter SREs alert on."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumberError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)
from prometheus_client import CollectorRegistry

from moderation.errors import FatalError
from moderation.events import delivery
from moderation.events.delivery import ACKNOWLEDGED, REFUSED, UNAVAILABLE, SendResult
from moderation.events.kafka import BrokerUnavailable, ProducerSlot, RecordRefused, TopicSender
from moderation.metrics import Metrics


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class Producer:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def send(self, topic: str, **_: Any) -> Future:
        return Future(self.error)


@pytest.mark.parametrize(
    ("error", "raised", "reason"),
    [
        (KafkaTimeoutError("no ack"), BrokerUnavailable, "broker_unavailable"),
        (NotLeaderForPartitionError(), BrokerUnavailable, "broker_unavailable"),
        (MessageSizeTooLargeError("1 MiB"), RecordRefused, "refused"),
        (TopicAuthorizationFailedError(), FatalError, "refused"),
    ],
)
def test_a_failed_send_is_counted_by_outbox_and_reason(error, raised, reason) -> None:
    metrics = Metrics(CollectorRegistry())
    send = TopicSender(Producer(error), "decisions", metrics.publish_failed("decisions"))  # type: ignore[arg-type]
    with pytest.raises(raised):
        send(b"k", b"v")
    value = metrics.registry.get_sample_value(
        "moderation_publish_failures_total", {"outbox": "decisions", "reason": reason}
    )
    assert value == 1


def test_an_acknowledged_send_counts_nothing() -> None:
    metrics = Metrics(CollectorRegistry())
    TopicSender(Producer(), "dlq", metrics.publish_failed("dead_letters"))(b"k", b"v")  # type: ignore[arg-type]
    assert (
        metrics.registry.get_sample_value(
            "moderation_publish_failures_total", {"outbox": "dead_letters", "reason": "refused"}
        )
        is None
    )


# -- per-record results ------------------------------------------------------------------
class PerRecordProducer:
    """A producer whose outcome depends on the record's value: ``sync`` values fail
    in ``send`` itself (as kafka-python's own size check does), ``broker`` values
    fail when their future is waited on."""

    def __init__(
        self, sync: dict[bytes, Exception] | None = None, broker: dict[bytes, Exception] | None = None
    ):
        self.sync = sync or {}
        self.broker = broker or {}
        self.sent: list[bytes] = []

    def send(self, topic: str, *, key: bytes, value: bytes, headers: list[Any]) -> Future:
        if value in self.sync:
            raise self.sync[value]
        self.sent.append(value)
        return Future(self.broker.get(value))


def _sender(producer: PerRecordProducer, metrics: Metrics) -> TopicSender:
    return TopicSender(producer, "decisions", metrics.publish_failed("decisions"))  # type: ignore[arg-type]


def _failures(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "moderation_publish_failures_total", {"outbox": "decisions", "reason": reason}
    )


def test_a_record_the_producer_refuses_does_not_hold_up_the_others() -> None:
    metrics = Metrics(CollectorRegistry())
    producer = PerRecordProducer(sync={b"huge": MessageSizeTooLargeError("The message is 1048700 bytes")})
    results = _sender(producer, metrics).send_each(
        [(b"a", b"one", ()), (b"b", b"huge", ()), (b"c", b"two", ())]
    )
    assert [r.status for r in results] == [ACKNOWLEDGED, REFUSED, ACKNOWLEDGED]
    assert "MessageSizeTooLargeError" in results[1].reason and "1048700 bytes" in results[1].reason
    assert producer.sent == [b"one", b"two"]  # the records after the refused one were still produced
    assert _failures(metrics, "refused") == 1
    assert _failures(metrics, "broker_unavailable") is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (MessageSizeTooLargeError("over the topic's max.message.bytes"), REFUSED),
        (RecordListTooLargeError(), REFUSED),
        (InvalidRecordError("bad record"), REFUSED),
        (CorruptRecordError(), REFUSED),
        (InvalidTimestampError(), REFUSED),
        (KafkaTimeoutError("no ack in 30 s"), UNAVAILABLE),
        (NotLeaderForPartitionError(), UNAVAILABLE),
        # kafka-python's answer for the good records of a batch that held an invalid one.
        (KafkaError("part of a batch which had one more more invalid records"), UNAVAILABLE),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v,
)
def test_each_broker_answer_is_one_records_outcome(error: Exception, status: str) -> None:
    metrics = Metrics(CollectorRegistry())
    producer = PerRecordProducer(broker={b"bad": error})
    results = _sender(producer, metrics).send_each([(b"k", b"bad", ()), (b"k", b"good", ())])
    assert [r.status for r in results] == [status, ACKNOWLEDGED]
    assert type(error).__name__ in results[0].reason
    assert _failures(metrics, status) == 1


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError(), UnknownTopicOrPartitionError()])
def test_a_configuration_problem_is_not_a_records_fault(error: Exception) -> None:
    """Authorization and unknown topics are the deployment's problem: retriable
    ones (an unknown topic may be being created) wait, the others stop the process."""
    producer = PerRecordProducer(broker={b"v": error})
    sender = _sender(producer, Metrics(CollectorRegistry()))
    if getattr(error, "retriable", False):
        assert sender.send_each([(b"k", b"v", ())])[0].status == UNAVAILABLE
    else:
        with pytest.raises(FatalError, match="TopicAuthorizationFailed"):
            sender.send_each([(b"k", b"v", ())])


def test_send_all_raises_for_the_first_record_not_acknowledged() -> None:
    producer = PerRecordProducer(sync={b"huge": MessageSizeTooLargeError("too big")})
    with pytest.raises(RecordRefused, match="MessageSizeTooLargeError.*too big"):
        _sender(producer, Metrics(CollectorRegistry())).send_all([(b"k", b"one"), (b"k", b"huge")])
    assert producer.sent == [b"one"]


def test_plain_senders_stop_at_their_first_error() -> None:
    """delivery.send_each with a plain callable (tests, scripts): the records before
    the failure are acknowledged, the rest untried, the error handed back."""
    sent: list[bytes] = []

    def send(key: bytes, value: bytes) -> None:
        if value == b"down":
            raise ConnectionError("broker down")
        sent.append(value)

    results, problem = delivery.send_each(send, [(b"k", b"a", ()), (b"k", b"down", ()), (b"k", b"b", ())])
    assert results == [SendResult(ACKNOWLEDGED)]
    assert isinstance(problem, ConnectionError)
    assert sent == [b"a"]


class ClosableProducer(Producer):
    def __init__(self, error: Exception | None = None) -> None:
        super().__init__(error)
        self.closed = False

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(UnknownProducerIdError(), id="unknown producer id"),
        pytest.param(OutOfOrderSequenceNumberError(), id="out of order"),
        pytest.param(KafkaTimeoutError("no ack in 30 s"), id="no acknowledgement"),
    ],
)
def test_a_producer_the_broker_no_longer_knows_is_replaced_and_the_record_retried_later(error) -> None:
    """A replaced broker (empty, same address) knows neither the producer's id
    nor its sequence numbers: the record is not acknowledged (retried from its
    outbox: not fatal), and the next send uses a new producer."""
    made = [ClosableProducer(error), ClosableProducer()]
    slot = ProducerSlot(lambda: made.pop(0))
    first = slot.producer
    decisions, dead_letters = TopicSender(slot, "decisions"), TopicSender(slot, "dlq")  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable):
        decisions(b"k", b"v")
    assert first.closed and slot.replacements == 1
    dead_letters(b"k", b"v")  # the other sender shares the new producer
    decisions(b"k", b"v")
    assert slot.producer is not first and not made


def test_an_unknown_server_error_is_retried_not_fatal() -> None:
    """UNKNOWN_SERVER_ERROR is the broker's own trouble (tansu answers it when
    two producers race for a new partition's first batch), not configuration."""
    with pytest.raises(BrokerUnavailable):
        TopicSender(Producer(UnknownError()), "decisions")(b"k", b"v")  # type: ignore[arg-type]
