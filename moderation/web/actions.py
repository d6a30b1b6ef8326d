"""Claim, view and decide, as the console and the API both do them.

Each function works inside the request's ``g.db`` session and commits; the
decision is published after its transaction commits (it waits in the outbox if
the broker is away).
"""

from __future__ import annotations

from flask import Response, abort, g
from sqlalchemy.exc import IntegrityError

from moderation import review
from moderation.domain import Role, Tier
from moderation.storage import audit, queue
from moderation.storage.models import Item, ItemMedia
from moderation.web.services import services


def claim_next() -> Item | None:
    settings = services().settings
    item = queue.claim_next_item(g.db, g.user, settings.claim_lease_seconds)
    if item is not None:
        audit.record(g.db, g.user.username, "item.claim", item.id)
    g.db.commit()
    return item


def visible_item(item_id: int, for_update: bool = False) -> Item:
    """The item if this user may see it: the live claim holder, an admin, or a
    senior (except the restricted queue of suspected minors, which is admins'
    only). ``for_update`` locks the row, so a double-submitted decision waits
    and then finds the item already decided."""
    item = g.db.get(Item, item_id, with_for_update=for_update)
    if item is None:
        abort(404, description="no such item")
    if not may_see(item):
        abort(403, description="claim this item first (press 'next')")
    return item


def may_see(item: Item) -> bool:
    if g.user.role == Role.ADMIN or queue.holds_live_claim(item, g.user):
        return True
    return g.user.role == Role.SENIOR and item.tier != Tier.RESTRICTED


def media_response(item: Item) -> Response:
    media = g.db.get(ItemMedia, item.id)
    if media is None:
        abort(404, description="no media stored for this item")
    audit.record(g.db, g.user.username, "item.media", item.id)
    g.db.commit()
    resp = Response(media.data, mimetype=media.content_type)
    resp.headers["Cache-Control"] = "no-store, private"
    resp.headers["Content-Disposition"] = "inline"
    return resp


def decide(item: Item, action: str, reason: str, note: str = "") -> review.DecisionResult:
    svc = services()
    result = review.decide(g.db, item, g.user, action, reason, note, svc.settings.pdq_min_quality)
    try:
        g.db.commit()
    except IntegrityError:  # a concurrent submit of the same decision won
        g.db.rollback()
        raise review.ReviewError("this item was just decided by another request") from None
    svc.metrics.decisions.labels(result.decision.action, result.decision.source).inc()
    svc.publisher.publish_soon([item.id])
    return result


def release(item: Item) -> None:
    if not queue.holds_live_claim(item, g.user):
        abort(409, description="you do not hold a claim on this item")
    queue.release(g.db, item)
    audit.record(g.db, g.user.username, "item.release", item.id)
    g.db.commit()
