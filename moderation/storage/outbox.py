"""Decisions table as a transactional outbox.

A decision row is written in the same transaction as the state change it
records. It is then produced to Kafka and marked ``published_at``; anything not
yet marked (a crash, a broker outage) is produced again by the next sweep. The
platform deduplicates by ``idempotency_key``, so delivery is at-least-once and
idempotent in effect.

A decision the broker refuses for good (too large, an invalid record) is set
aside with the broker's reason (``set_aside_at``, ``set_aside_reason``) and the
rest of the outbox keeps flowing. An item's decisions are published in order,
so its later decisions wait behind a set-aside one until an admin retries or
discards it (storage/set_aside.py, the console's /admin/outbox).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from moderation.domain import Action, Source
from moderation.events import delivery
from moderation.events.delivery import UNAVAILABLE, BrokerUnavailable
from moderation.storage.models import Decision, Item, utcnow

log = logging.getLogger(__name__)

DECISION_SCHEMA_VERSION = 1

# (key, value) -> None, raising if the broker did not acknowledge; or a
# TopicSender, whose send_each reports each record's outcome.
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
    each by its outcome; returns how many were published.

    The rows are locked with ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) for the whole
    batch, so concurrent sweepers in workers and web replicas do not produce the
    same decision twice. An item's decisions reach the topic in order: one waits
    while an earlier one of its item is unpublished, whether held by another
    sweeper or set aside, and within a batch each item's next decision is sent
    only once the previous one was acknowledged (rounds: usually one round trip).

    Each row is marked by its own outcome, and the marks are committed even when
    the broker failed part of the batch: acknowledged -> ``published_at``;
    refused for good -> set aside with the reason (later decisions of its item
    wait, the rest of the batch goes on); not acknowledged -> left for the next
    sweep, and ``BrokerUnavailable`` (or a plain sender's own error) is raised
    after the commit. Consumers deduplicate by ``idempotency_key``.
    """
    published: list[Decision] = []
    with sessions() as session:
        query = (
            select(Decision)
            .where(
                Decision.published_at.is_(None),
                Decision.set_aside_at.is_(None),
                Decision.discarded_at.is_(None),
            )
            .order_by(Decision.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if item_ids is not None:
            query = query.where(Decision.item_id.in_(item_ids))
        pending = _in_order(session, session.scalars(query).all())
        if not pending:
            return 0
        problem = _produce_in_rounds(pending, send, published)
        session.commit()
    if on_published is not None:
        for decision in published:
            on_published(decision)
    if problem is not None:
        raise problem
    return len(published)


def _produce_in_rounds(pending: list[Decision], send: SendFn, published: list[Decision]) -> Exception | None:
    """Send ``pending`` (in id order) in rounds of at most one decision per item,
    marking each row; returns the error to raise once the marks are committed."""
    queues: dict[int, list[Decision]] = {}
    for decision in pending:
        queues.setdefault(decision.item_id, []).append(decision)
    now = utcnow()
    while queues:
        batch = [q.pop(0) for q in queues.values()]
        results, problem = delivery.send_each(send, [(*encode(d), ()) for d in batch])
        stopped = False
        for decision, result in zip(batch, results, strict=False):
            if result.acknowledged:
                decision.published_at = now
                published.append(decision)
            elif result.status == UNAVAILABLE:
                stopped = True
                queues.pop(decision.item_id, None)
            else:
                _set_aside(decision, result.reason, now)
                queues.pop(decision.item_id, None)  # its later decisions wait behind it
        if problem is not None:
            return problem
        if stopped:
            reason = next(r.reason for r in results if r.status == UNAVAILABLE)
            return BrokerUnavailable(f"broker did not acknowledge a decision: {reason}")
        queues = {item_id: q for item_id, q in queues.items() if q}
    return None


def _set_aside(decision: Decision, reason: str, now: datetime) -> None:
    decision.set_aside_at = now
    decision.set_aside_reason = reason or "refused by the broker"
    log.error(
        "decision set aside: the broker refused it for good",
        extra={
            "idempotency_key": decision.idempotency_key,
            "item_id": decision.item_id,
            "reason": decision.set_aside_reason,
            "size": len(encode(decision)[1]),
        },
    )


def _in_order(session: Session, pending: Sequence[Decision]) -> list[Decision]:
    """Drop decisions that have an earlier unpublished decision outside ``pending``
    (held by another sweeper, or set aside and not discarded)."""
    if not pending:
        return []
    mine = {d.id for d in pending}
    rows = session.execute(
        select(Decision.item_id, Decision.id).where(
            Decision.published_at.is_(None),
            Decision.discarded_at.is_(None),
            Decision.item_id.in_({d.item_id for d in pending}),
        )
    ).all()
    blocked_after: dict[int, int] = {}  # item id -> smallest unpublished id someone else holds
    for item_id, decision_id in rows:
        if decision_id not in mine:
            blocked_after[item_id] = min(decision_id, blocked_after.get(item_id, decision_id))
    return [d for d in pending if d.id < blocked_after.get(d.item_id, d.id + 1)]
