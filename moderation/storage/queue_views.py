"""Queue-level views for leads: what waits, who holds what, what was escalated,
what is past its deadline.

- ``waiting``: pending items, and claims whose lease ran out (they are back in
  the queue as soon as someone presses "next");
- ``claimed``: live claims;
- ``escalated``: open items in the senior and restricted tiers;
- ``breached``: open items (waiting or claimed) past their SLA deadline.

Restricted items (suspected minors) are counted and listed for admins only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from moderation.domain import ItemState, Tier
from moderation.storage.models import Item, User, utcnow
from moderation.storage.queue import report_reason

VIEWS = ("waiting", "claimed", "escalated", "breached")
ESCALATED_TIERS = (Tier.SENIOR.value, Tier.RESTRICTED.value)
PENDING, CLAIMED = ItemState.PENDING.value, ItemState.CLAIMED.value


@dataclass(frozen=True)
class QueueRow:
    id: int
    tier: str
    priority: int
    reason: str
    report_reason: str | None
    state: str
    created_at: datetime
    due_at: datetime | None
    claimed_by: str | None  # username, live claims only
    lease_expires_at: datetime | None  # live claims only


def _condition(view: str, now: datetime) -> ColumnElement[bool]:
    live = and_(Item.state == CLAIMED, Item.lease_expires_at >= now)
    expired = and_(Item.state == CLAIMED, Item.lease_expires_at < now)
    open_ = Item.state.in_([PENDING, CLAIMED])
    if view == "waiting":
        return or_(Item.state == PENDING, expired)
    if view == "claimed":
        return live
    if view == "escalated":
        return and_(open_, Item.tier.in_(ESCALATED_TIERS))
    if view == "breached":
        return and_(open_, Item.due_at < now)
    raise ValueError(f"unknown queue view {view!r}; use one of {', '.join(VIEWS)}")


def _visible(include_restricted: bool) -> ColumnElement[bool]:
    open_ = Item.state.in_([PENDING, CLAIMED])
    return open_ if include_restricted else and_(open_, Item.tier != Tier.RESTRICTED.value)


def view_counts(session: Session, include_restricted: bool, now: datetime | None = None) -> dict[str, int]:
    """Items in each view, in one pass over the open items."""
    now = now or utcnow()
    columns = [func.count().filter(_condition(view, now)) for view in VIEWS]
    row = session.execute(select(*columns).where(_visible(include_restricted))).one()
    return {view: int(n or 0) for view, n in zip(VIEWS, row, strict=True)}


# Soonest deadline first (most overdue first in "breached"); claims by lease end.
_ORDER = {
    "waiting": (Item.due_at, Item.id),
    "claimed": (Item.lease_expires_at, Item.id),
    "escalated": (Item.due_at, Item.id),
    "breached": (Item.due_at, Item.id),
}


def view_rows(
    session: Session,
    view: str,
    include_restricted: bool,
    limit: int,
    offset: int = 0,
    now: datetime | None = None,
) -> list[QueueRow]:
    now = now or utcnow()
    rows = session.execute(
        select(Item, User.username)
        .outerjoin(User, User.id == Item.claimed_by)
        .where(_visible(include_restricted), _condition(view, now))
        .order_by(*_ORDER[view])
        .limit(limit)
        .offset(offset)
    ).all()
    result = []
    for item, username in rows:
        live = item.state == CLAIMED and item.lease_expires_at is not None and item.lease_expires_at >= now
        result.append(
            QueueRow(
                id=item.id,
                tier=item.tier,
                priority=item.priority,
                reason=item.reason,
                report_reason=report_reason(item),
                state=CLAIMED if live else PENDING,
                created_at=item.created_at,
                due_at=item.due_at,
                claimed_by=username if live else None,
                lease_expires_at=item.lease_expires_at if live else None,
            )
        )
    return result
