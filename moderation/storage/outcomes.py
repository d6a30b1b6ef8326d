"""Persist one analysed upload: the item, its media (if queued) and any automatic
decision, in one transaction keyed by ``event_id``."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from moderation.config import Settings
from moderation.domain import Action, ItemState, Route, Source
from moderation.pipeline import Analysis
from moderation.storage import audit, evidence, exchange_store, groups, outbox, queue
from moderation.storage.flood import FloodPolicy, record_matches
from moderation.storage.models import Item, ItemMedia


def find_item_id(session: Session, event_id: str) -> int | None:
    return session.scalar(select(Item.id).where(Item.event_id == event_id))


def record_analysis(
    session: Session,
    analysis: Analysis,
    publish_allow: bool,
    flood: FloodPolicy | None = None,
    settings: Settings | None = None,
) -> tuple[int, bool, list[int]]:
    """Insert the outcome and count its bank matches (flood control); returns
    (item id, created, ids of entries this outcome quarantined). A queued item
    gets its SLA deadline and queue rank (``settings``: SLA_HOURS and
    PRIORITY_POINT_MINUTES; the defaults without) and joins its near-duplicates'
    group (storage/groups.py: PDQ_MATCH_DISTANCE, PDQ_MIN_QUALITY). A concurrent or earlier
    insert of the same event id wins and this call returns its id with
    created=False, counting nothing."""
    event, verdict, hashes = analysis.event, analysis.verdict, analysis.hashes
    queued = verdict.route in (Route.REVIEW, Route.AUTO_REMOVE)
    item = Item(
        event_id=event.event_id,
        content_id=event.content_id,
        uploader_id=event.uploader_id,
        media_url=event.media_url,
        media_type=event.media_type,
        event=event.raw,
        sha256=hashes.sha256,
        md5=hashes.md5,
        pdq=hashes.pdq,
        pdq_quality=hashes.pdq_quality,
        vpdq=hashes.vpdq,
        score=analysis.score,
        model_version=analysis.model_version,
        model_scores=analysis.classification.as_json(),
        regions=analysis.regions,
        matches=[m.as_dict() for m in verdict.matches],
        route=verdict.route.value,
        reason=verdict.reason,
        priority=verdict.priority,
        state=ItemState.PENDING.value if queued else ItemState.CLOSED.value,
    )
    if queued:
        queue.schedule(item, settings or Settings())
    try:
        session.add(item)
        session.flush()
        if queued:
            session.add(ItemMedia(item_id=item.id, content_type=analysis.content_type, data=analysis.data))
            groups.assign(session, item, groups.GroupPolicy.of(settings) if settings else None)
        key = f"{event.content_id}:{event.event_id}:pipeline"
        if verdict.route is Route.AUTO_REMOVE:
            decision = outbox.add_decision(
                session, item, Action.REMOVE, Source.HASH_MATCH, verdict.reason, key
            )
            media = (analysis.data, analysis.content_type)
            evidence.preserve(session, item, decision, "pipeline", settings=settings, media=media)
            exchange_store.queue_feedback(session, item, blocked=True)
            audit.record(
                session,
                "pipeline",
                "decision.remove",
                item.id,
                reason=verdict.reason,
                matches=item.matches,
                idempotency_key=key,
            )
        elif verdict.route is Route.ALLOW and publish_allow:
            outbox.add_decision(session, item, Action.ALLOW, Source.CLASSIFIER, verdict.reason, key)
        quarantined = record_matches(session, verdict.matches, flood or FloodPolicy())
        session.commit()
        return item.id, True, quarantined
    except IntegrityError:
        session.rollback()
        existing = find_item_id(session, event.event_id)
        if existing is None:
            raise
        return existing, False, []
