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
from moderation.storage import audit, exposure, queue
from moderation.storage.models import ExposureSession, Item, ItemMedia
from moderation.web.services import services


class BreakDue(Exception):
    """A break is due: no new item is served until it is acknowledged (POST /break)."""

    def __init__(self, session: ExposureSession) -> None:
        super().__init__("break due")
        self.session = session


def exposure_limits() -> exposure.Limits:
    settings = services().settings
    return exposure.Limits(settings.break_after_items, settings.break_after_revealed_seconds)


def claim_next() -> Item | None:
    """Claim (or renew) the user's next item. Raises ``BreakDue`` when a break is
    due and the user holds no live claim: the current item may be finished."""
    current = exposure.current(g.db, g.user)
    if exposure.break_due(exposure_limits(), current) and queue.current_claim(g.db, g.user) is None:
        exposure.mark_prompted(g.db, g.user, current)
        g.db.commit()
        raise BreakDue(current)
    settings = services().settings
    item = queue.claim_next_item(g.db, g.user, settings.claim_lease_seconds, settings=settings)
    if item is not None:
        audit.record(g.db, g.user.username, "item.claim", item.id)
    g.db.commit()
    return item


# One answer for an item that does not exist and one the caller may not see:
# which ids exist (and how many items there are) is not for every user to learn.
NOT_VISIBLE = "no such item, or not one you may see (press N for the next item)"


def visible_item(item_id: int, for_update: bool = False) -> Item:
    """The item if this user may see it: the live claim holder, an admin, or a
    senior (except the restricted queue of suspected minors, which is admins'
    only); otherwise 404, the same as for an item that does not exist.
    ``for_update`` locks the row, so a double-submitted decision waits and then
    finds the item already decided."""
    item = g.db.get(Item, item_id, with_for_update=for_update)
    if item is None or not may_see(item):
        abort(404, description=NOT_VISIBLE)
    return item


def view_item(item_id: int, **details: object) -> Item:
    """``visible_item`` for a person looking at it (the item page, an API read):
    counted towards their next break and audited as ``item.view``."""
    item = visible_item(item_id)
    exposure.record_view(g.db, g.user, item.id)  # before this view's audit row: counts each item once
    audit.record(g.db, g.user.username, "item.view", item.id, **details)
    g.db.commit()
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
    result = review.decide(g.db, item, g.user, action, reason, note, settings=svc.settings)
    try:
        g.db.commit()
    except IntegrityError:  # a concurrent submit of the same decision won
        g.db.rollback()
        raise review.ReviewError("this item was just decided by another request") from None
    if result.published is not None:  # None: a four-eyes first review or disagreement, nothing to publish
        svc.metrics.decisions.labels(result.decision.action, result.decision.source).inc()
        svc.publisher.publish_soon([item.id])
    return result


def release(item: Item) -> None:
    """Skip: back to the queue for everybody else, never served to this user again."""
    if not queue.holds_live_claim(item, g.user):
        abort(409, description="you do not hold a claim on this item")
    queue.skip(g.db, item, g.user)
    audit.record(g.db, g.user.username, "item.skip", item.id)
    g.db.commit()


def renew_lease(item_id: int) -> str:
    """Extend the caller's live claim (the open page does this while it is
    visible); the new expiry as ISO 8601. 404 (as for no such item) when the
    caller may not see the item, e.g. a moderator whose claim ran out; 409 when
    they may see it but hold no live claim on it (a senior's expired claim)."""
    item = visible_item(item_id, for_update=True)
    expires = queue.renew_lease(item, g.user, services().settings.claim_lease_seconds)
    if expires is None:
        abort(409, description="your claim on this item has ended; press 'next' for an item")
    g.db.commit()
    return expires.isoformat()
