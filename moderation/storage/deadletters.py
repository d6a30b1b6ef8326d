"""Dead letters, stored before they are produced (the same outbox pattern as
decisions). A redelivered record finds its row by source position and is not
dead-lettered twice; a row whose produce failed is produced again. A later,
separate delivery of the same event (the upload service retrying after a
temporary failure) is a new record and gets a new attempt."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.errors import ModerationError, ProcessingFailed
from moderation.storage.models import DeadLetter, utcnow

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
    with sessions() as session:
        query = (
            select(DeadLetter)
            .where(DeadLetter.published_at.is_(None))
            .order_by(DeadLetter.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if ids is not None:
            query = query.where(DeadLetter.id.in_(ids))
        pending = session.scalars(query).all()
        for row in pending:
            send(row.key, row.value, [(k, v.encode()) for k, v in row.headers.items()])
            row.published_at = utcnow()
        session.commit()
        return len(pending)


def _timestamp(record: Any) -> int:
    return int(getattr(record, "timestamp", -1) or -1)
