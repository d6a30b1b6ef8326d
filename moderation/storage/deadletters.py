"""Dead letters, stored before they are produced (the same outbox pattern as
decisions). A redelivered record finds its row by source position or event id
and is not dead-lettered twice; a row whose produce failed is produced again."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from moderation.errors import ModerationError
from moderation.storage.models import DeadLetter, utcnow

# Kafka's default message limit is 1 MiB; keep room for headers.
MAX_VALUE_BYTES = 900 * 1024
TRUNCATED_VALUE_BYTES = 64 * 1024

SendWithHeaders = Callable[[bytes, bytes, Sequence[tuple[str, bytes]]], None]


def find(session: Session, record: Any, event_id: str | None = None) -> DeadLetter | None:
    position = (
        (DeadLetter.source_topic == record.topic)
        & (DeadLetter.source_partition == record.partition)
        & (DeadLetter.source_offset == record.offset)
        & (DeadLetter.source_timestamp == _timestamp(record))
    )
    clause = or_(position, DeadLetter.event_id == event_id) if event_id else position
    return session.scalar(select(DeadLetter).where(clause).limit(1))


def record_dead_letter(
    session: Session, record: Any, error: ModerationError, event_id: str | None
) -> DeadLetter:
    """Store the dead letter (idempotent by source position); the caller publishes it."""
    value = record.value or b""
    headers: dict[str, str] = {
        "error_class": error.code,
        "error_message": str(error)[:1000],
        "source_topic": record.topic,
        "source_partition": str(record.partition),
        "source_offset": str(record.offset),
        "failed_at": utcnow().isoformat(),
    }
    if event_id:
        headers["event_id"] = event_id
    if len(value) > MAX_VALUE_BYTES:
        # Too big to produce again: keep the head and say how to find the rest.
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
        key=record.key or b"",
        value=value,
        headers=headers,
    )
    try:
        session.add(row)
        session.commit()
        return row
    except IntegrityError:
        session.rollback()
        existing = find(session, record, event_id)
        if existing is None:
            raise
        return existing


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
