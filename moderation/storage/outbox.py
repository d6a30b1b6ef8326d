"""Decisions table as a transactional outbox.

A decision row is written in the same transaction as the state change it
records. It is then produced to Kafka and marked ``published_at``; anything not
yet marked (a crash, a broker outage) is produced again by the next sweep. The
platform deduplicates by ``idempotency_key``, so delivery is at-least-once and
idempotent in effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from moderation.domain import Action, Source
from moderation.storage.models import Decision, Item, utcnow

DECISION_SCHEMA_VERSION = 1

# (key, value) -> None; raises if the broker did not acknowledge.
SendFn = Callable[[bytes, bytes], None]


def add_decision(
    session: Session,
    item: Item,
    action: Action,
    source: Source,
    reason: str,
    idempotency_key: str | None = None,
    moderator: str | None = None,
    note: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Decision:
    """Record a decision on ``item``. ``sequence`` numbers an item's decisions from 1
    so that consumers can tell the latest (e.g. an admin's verdict after an escalation).
    ``extra``: more payload fields (review.py: restricted, banked, second_moderator,
    appeal_id, supersedes; documented in docs/events.md)."""
    now = utcnow()
    sequence = 1 + (
        session.scalar(select(func.count()).select_from(Decision).where(Decision.item_id == item.id)) or 0
    )
    idempotency_key = idempotency_key or f"{item.content_id}:{item.event_id}:decision:{sequence}"
    payload: dict[str, Any] = {
        "schema_version": DECISION_SCHEMA_VERSION,
        "idempotency_key": idempotency_key,
        "sequence": sequence,
        "event_id": item.event_id,
        "content_id": item.content_id,
        "uploader_id": item.uploader_id,
        "action": action.value,
        "source": source.value,
        "reason": reason,
        "matches": item.matches or [],
        "classifier_score": item.score,
        "model_version": item.model_version or None,
        "model_scores": [
            {k: m[k] for k in ("model", "version", "score") if k in m} for m in item.model_scores or []
        ],
        "moderator": moderator,
        "note": note or None,
        "decided_at": now.isoformat(),
    }
    payload.update(extra or {})
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
    same decision twice; a decision waits while an earlier one of the same item is
    unpublished and held by another sweeper, so an item's decisions reach the
    topic in order. If a send fails, nothing of the batch is marked and all of
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
        pending = _in_order(session, session.scalars(query).all())
        if not pending:
            return 0
        now = utcnow()
        records = [encode(decision) for decision in pending]
        send_all = getattr(send, "send_all", None)
        if send_all is not None:
            send_all(records)  # one round trip to the broker
        else:
            for key, value in records:
                send(key, value)
        for decision in pending:
            decision.published_at = now
        session.commit()
    if on_published is not None:
        for decision in pending:
            on_published(decision)
    return len(pending)


def _in_order(session: Session, pending: Sequence[Decision]) -> list[Decision]:
    """Drop decisions that have an earlier unpublished decision outside ``pending``."""
    if not pending:
        return []
    mine = {d.id for d in pending}
    rows = session.execute(
        select(Decision.item_id, Decision.id).where(
            Decision.published_at.is_(None), Decision.item_id.in_({d.item_id for d in pending})
        )
    ).all()
    blocked_after: dict[int, int] = {}  # item id -> smallest unpublished id someone else holds
    for item_id, decision_id in rows:
        if decision_id not in mine:
            blocked_after[item_id] = min(decision_id, blocked_after.get(item_id, decision_id))
    return [d for d in pending if d.id < blocked_after.get(d.item_id, d.id + 1)]
