"""TopicSender's error contract and the publish-failure counter SREs alert on."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from prometheus_client import CollectorRegistry

from moderation.errors import FatalError
from moderation.events.kafka import BrokerUnavailable, TopicSender
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
        (MessageSizeTooLargeError("1 MiB"), FatalError, "refused"),
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
