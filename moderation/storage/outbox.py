"""Decisions table as a transactional outbox.

A decision row is written in the same transaction as the state change it
records. It is then produced to Kafka and marked ``published_at``; anything not
yet marked (a crash, a broker outage) is produced again by the next sweep. The
platform deduplicates by ``idempotency_key``, so delivery is at-least-once and
idempotent in effect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from moderation.domain import Action, Source
from moderation.storage.models import Decision, Item, utcnow

log = logging.getLogger(__name__)

DECISION_SCHEMA_VERSION = 1

# (key, value) -> None; raises if the broker did not acknowledge.
SendFn = Callable[[bytes, bytes], None]


def add_decision(
    session: Session,
    item: Item,
    action: Action,
    source: Source,
    reason: str,
    idempotency_key: str,
    moderator: str | None = None,
    note: str = "",
) -> Decision:
    now = utcnow()
    payload: dict[str, Any] = {
        "schema_version": DECISION_SCHEMA_VERSION,
        "idempotency_key": idempotency_key,
        "event_id": item.event_id,
        "content_id": item.content_id,
        "uploader_id": item.uploader_id,
        "action": action.value,
        "source": source.value,
        "reason": reason,
        "matches": item.matches or [],
        "classifier_score": item.score,
        "model_version": item.model_version or None,
        "moderator": moderator,
        "note": note or None,
        "decided_at": now.isoformat(),
    }
    decision = Decision(
        idempotency_key=idempotency_key,
        item_id=item.id,
        content_id=item.content_id,
        action=action.value,
        source=source.value,
        reason=reason,
        moderator=moderator,
        payload=payload,
        created_at=now,
    )
    session.add(decision)
    return decision


def encode(decision: Decision) -> tuple[bytes, bytes]:
    value = json.dumps(decision.payload, sort_keys=True, separators=(",", ":")).encode()
    return decision.content_id.encode(), value


def publish_pending(
    sessions: sessionmaker[Session],
    send: SendFn,
    item_ids: Sequence[int] | None = None,
    limit: int = 500,
    on_published: Callable[[Decision], None] | None = None,
) -> int:
    """Produce unpublished decisions (optionally only those of ``item_ids``) and mark
    them published; returns how many.

    The rows are locked with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) for the whole
    batch, so concurrent sweepers in workers and web replicas do not produce the
    same decision twice. If a send fails, nothing of the batch is marked and all of
    it is produced again later: consumers deduplicate by ``idempotency_key``.
    """
    with sessions() as session:
        query = (
            select(Decision)
            .where(Decision.published_at.is_(None))
            .order_by(Decision.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if item_ids is not None:
            query = query.where(Decision.item_id.in_(item_ids))
        pending = session.scalars(query).all()
        if not pending:
            return 0
        now = utcnow()
        for decision in pending:
            key, value = encode(decision)
            send(key, value)
            decision.published_at = now
        session.commit()
    if on_published is not None:
        for decision in pending:
            on_published(decision)
    return len(pending)
