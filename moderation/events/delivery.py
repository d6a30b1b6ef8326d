"""What became of each record sent to Kafka, for the outboxes (no kafka import:
storage uses it without the client library).

``TopicSender.send_each`` (events/kafka.py) reports one ``SendResult`` per
record. ``send_each`` here gives the same for any sender: a ``TopicSender``,
or a plain callable ``send(key, value[, headers])`` that raises when a record
is not acknowledged (tests, scripts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from moderation.errors import TransientError

ACKNOWLEDGED = "acknowledged"
REFUSED = "refused"  # for good: set the record aside (storage/set_aside.py)
UNAVAILABLE = "broker_unavailable"  # not acknowledged in time, or retriable: produce it again later

Headers = Sequence[tuple[str, bytes]]
Record = tuple[bytes, bytes, Headers]


class BrokerUnavailable(TransientError):
    """The broker did not acknowledge a record in time (retried later)."""


@dataclass(frozen=True)
class SendResult:
    """One record's outcome; ``reason`` says what the broker or producer answered."""

    status: str
    reason: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.status == ACKNOWLEDGED


def send_each(
    send: Callable[..., Any], records: Sequence[Record]
) -> tuple[list[SendResult], Exception | None]:
    """Produce ``records`` in order; returns the outcome of each record that was
    tried, and the exception that stopped a plain callable (None otherwise).

    A sender with ``send_each`` (TopicSender) tries every record and reports
    each, whatever happens to the others (its ``FatalError`` propagates). A
    plain callable is called record by record; the first exception stops it:
    the records before it are acknowledged, it and the rest have no result,
    and the caller marks what it can before raising the exception."""
    per_record = getattr(send, "send_each", None)
    if per_record is not None:
        return list(per_record(records)), None
    results: list[SendResult] = []
    for key, value, headers in records:
        try:
            if headers:
                send(key, value, headers)
            else:
                send(key, value)
        except Exception as exc:  # noqa: BLE001 - handed back to the caller to raise
            return results, exc
        results.append(SendResult(ACKNOWLEDGED))
    return results, None
