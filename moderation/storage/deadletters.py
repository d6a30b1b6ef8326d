"""Dead letters, stored before they are produced (the same outbox pattern as
decisions). A redelivered record finds its row by source position and is not
dead-lettered twice; a row whose produce failed is produced again. A later,
separate delivery of the same event (the upload service retrying after a
temporary failure) is a new record and gets a new attempt. A row the broker
refuses for good is set aside with the reason, as decisions are
(storage/set_aside.py); dead letters have no order to keep."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.errors import ModerationError, ProcessingFailed
from moderation.events import delivery
from moderation.events.delivery import UNAVAILABLE, BrokerUnavailable
from moderation.storage.models import DeadLetter, utcnow

log = logging.getLogger(__name__)

# Kafka's default message limit is 1 MiB. Headers are capped (error message 1000
# characters, event id 200), so key + value within this budget always fits.
MAX_RECORD_BYTES = 900 * 1024
MAX_KEY_BYTES = 4 * 1024
TRUNCATED_VALUE_BYTES = 64 * 1024

SendWithHeaders = Callable[[bytes, bytes, Sequence[tuple[str, bytes]]], None]


def unexpected_failure(exc: Exception) -> ProcessingFailed:
    """A record's unexpected, non-transient error as the failure its dead letter
    carries, so that one poison record cannot stop a consumer for good."""
    if isinstance(exc, DBAPIError):
        # Never log or forward the statement's parameters: they may hold media bytes.
        return ProcessingFailed(f"database refused the outcome: {type(exc.orig).__name__}")
    return ProcessingFailed(f"{type(exc).__name__}: {exc}")


def find(session: Session, record: Any) -> DeadLetter | None:
    return session.scalar(
        select(DeadLetter).where(
            DeadLetter.source_topic == record.topic,
            DeadLetter.source_partition == record.partition,
            DeadLetter.source_offset == record.offset,
            DeadLetter.source_timestamp == _timestamp(record),
        )
    )


def record_dead_letter(
    session: Session, record: Any, error: ModerationError, event_id: str | None
) -> tuple[DeadLetter, bool]:
    """Store the dead letter, idempotent by source position; returns (row, created).
    The caller publishes it."""
    key, value = record.key or b"", record.value or b""
    headers: dict[str, str] = {
        "error_class": error.code,
        "error_message": str(error)[:1000],
        "source_topic": record.topic,
        "source_partition": str(record.partition),
        "source_offset": str(record.offset),
        "failed_at": utcnow().isoformat(),
    }
    if event_id:
        headers["event_id"] = event_id[:200]
    if len(key) > MAX_KEY_BYTES:
        headers.update(
            key_truncated="true", key_size=str(len(key)), key_sha256=hashlib.sha256(key).hexdigest()
        )
        key = key[:MAX_KEY_BYTES]
    if len(key) + len(value) > MAX_RECORD_BYTES:
        # Too big to produce again: keep the head and say how to recognise the rest.
        headers.update(
            value_truncated="true", value_size=str(len(value)), value_sha256=hashlib.sha256(value).hexdigest()
        )
        value = value[:TRUNCATED_VALUE_BYTES]
    row = DeadLetter(
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        source_timestamp=_timestamp(record),
        event_id=event_id,
        error_class=error.code,
        key=key,
        value=value,
        headers=headers,
    )
    try:
        session.add(row)
        session.commit()
        return row, True
    except IntegrityError:
        session.rollback()
        existing = find(session, record)
        if existing is None:
            raise
        return existing, False


def publish_pending(
    sessions: sessionmaker[Session], send: SendWithHeaders, ids: Sequence[int] | None = None, limit: int = 100
) -> int:
    """Produce unpublished dead letters (optionally only ``ids``); returns how
    many were published. Each row is marked by its own outcome and the marks are
    committed: acknowledged -> ``published_at``; refused for good -> set aside
    with the reason; not acknowledged -> left for the next sweep, and
    ``BrokerUnavailable`` (or a plain sender's own error) raised after the commit."""
    with sessions() as session:
        query = (
            select(DeadLetter)
            .where(
                DeadLetter.published_at.is_(None),
                DeadLetter.set_aside_at.is_(None),
                DeadLetter.discarded_at.is_(None),
            )
            .order_by(DeadLetter.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if ids is not None:
            query = query.where(DeadLetter.id.in_(ids))
        pending = session.scalars(query).all()
        records = [(row.key, row.value, [(k, v.encode()) for k, v in row.headers.items()]) for row in pending]
        results, problem = delivery.send_each(send, records)
        now = utcnow()
        published = 0
        unavailable = ""
        for row, result in zip(pending, results, strict=False):
            if result.acknowledged:
                row.published_at = now
                published += 1
            elif result.status == UNAVAILABLE:
                unavailable = unavailable or result.reason
            else:
                row.set_aside_at, row.set_aside_reason = now, result.reason or "refused by the broker"
                log.error(
                    "dead letter set aside: the broker refused it for good",
                    extra={"dead_letter_id": row.id, "reason": row.set_aside_reason, "size": len(row.value)},
                )
        session.commit()
    if problem is not None:
        raise problem
    if unavailable:
        raise BrokerUnavailable(f"broker did not acknowledge a dead letter: {unavailable}")
    return published


def _timestamp(record: Any) -> int:
    return int(getattr(record, "timestamp", -1) or -1)
