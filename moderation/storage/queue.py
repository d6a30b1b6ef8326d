"""The review queue: recording pipeline outcomes and claiming items with leases.

Claiming is one atomic ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
LOCKED LIMIT 1) RETURNING``. On PostgreSQL concurrent claimers skip each other's
locked rows; on SQLite the whole statement runs under the database write lock,
which gives the same guarantee. An expired lease makes an item claimable again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from moderation import queue_policy
from moderation.config import Settings
from moderation.domain import ItemState, Role, Tier
from moderation.storage.models import Item, ItemExclusion, User, utcnow

# Who works which queue, most urgent queue first.
CLAIMABLE_TIERS: dict[str, tuple[str, ...]] = {
    Role.MODERATOR: (Tier.SECOND_REVIEW, Tier.APPEAL, Tier.MODERATOR),
    Role.SENIOR: (Tier.SENIOR, Tier.SECOND_REVIEW, Tier.APPEAL, Tier.MODERATOR),
    Role.ADMIN: (Tier.RESTRICTED, Tier.SENIOR, Tier.SECOND_REVIEW, Tier.APPEAL, Tier.MODERATOR),
    Role.AUDITOR: (),
}


def claimable_tiers(role: str) -> tuple[str, ...]:
    return tuple(str(t) for t in CLAIMABLE_TIERS.get(role, ()))


def current_claim(session: Session, user: User, now: datetime | None = None) -> Item | None:
    now = now or utcnow()
    return session.scalar(
        select(Item)
        .where(Item.state == ItemState.CLAIMED.value, Item.claimed_by == user.id, Item.lease_expires_at > now)
        .order_by(Item.lease_expires_at)
        .limit(1)
    )


def claim_next_item(
    session: Session, user: User, lease_seconds: int, now: datetime | None = None
) -> Item | None:
    """Claim the highest-priority, oldest claimable item for ``user``.

    A user who already holds a live claim gets that item back (its lease renewed)
    instead of a second one, so nobody can hoard items by pressing "next".
    The caller commits.
    """
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_seconds)
    # Serialise one user's concurrent "next" requests (double clicks, two tabs) on
    # PostgreSQL; SQLite serialises writers anyway, and the NOT EXISTS below covers it.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    held = current_claim(session, user, now)
    if held is not None:
        held.lease_expires_at = expires
        return held
    tiers = claimable_tiers(user.role)
    candidate = (
        select(Item.id)
        .where(
            Item.tier.in_(tiers),
            or_(
                Item.state == ItemState.PENDING.value,
                and_(Item.state == ItemState.CLAIMED.value, Item.lease_expires_at < now),
            ),
        )
        # Admins see the escalation tier first.
        .order_by(
            case({t: i for i, t in enumerate(tiers)}, value=Item.tier, else_=len(tiers)),
            Item.priority.desc(),
            Item.created_at,
            Item.id,
        )
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    holds_one = (
        select(Item.id)
        .where(Item.state == ItemState.CLAIMED.value, Item.claimed_by == user.id, Item.lease_expires_at > now)
        .exists()
    )
    claimed_id = session.execute(
        update(Item)
        .where(Item.id == candidate, ~holds_one)
        .values(state=ItemState.CLAIMED.value, claimed_by=user.id, lease_expires_at=expires)
        .returning(Item.id)
        .execution_options(synchronize_session=False)
    ).scalar()
    if claimed_id is None:
        return current_claim(session, user, now)  # None, or one a concurrent request just took
    return session.get(Item, claimed_id, populate_existing=True)


def release(session: Session, item: Item) -> None:
    item.state = ItemState.PENDING.value
    item.claimed_by = None
    item.lease_expires_at = None


def holds_live_claim(item: Item, user: User, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return (
        item.state == ItemState.CLAIMED.value
        and item.claimed_by == user.id
        and item.lease_expires_at is not None
        and item.lease_expires_at > now
    )


def queue_depth(session: Session, now: datetime | None = None) -> Sequence[tuple[str, str, int, int]]:
    """(state, tier, priority, count) for every open item; expired claims count as pending."""
    now = now or utcnow()
    state = case(
        (and_(Item.state == ItemState.CLAIMED.value, Item.lease_expires_at < now), ItemState.PENDING.value),
        else_=Item.state,
    )
    rows = session.execute(
        select(state, Item.tier, Item.priority, func.count())
        .where(Item.state.in_([ItemState.PENDING.value, ItemState.CLAIMED.value]))
        .group_by(state, Item.tier, Item.priority)
    ).all()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def schedule(item: Item, settings: Settings, now: datetime | None = None, restart_sla: bool = False) -> None:
    """Set the item's SLA deadline and rank from its reason, arrival and priority.

    The report reason (``report_reason`` in the upload event) picks the SLA if
    ``SLA_HOURS`` names it, else the routing reason. ``restart_sla`` starts the
    deadline (and rank) from ``now``: an appeal is a new request."""
    now = now or utcnow()
    start = now if restart_sla else (item.created_at or now)
    report = item.event.get("report_reason") if isinstance(item.event, dict) else None
    hours = queue_policy.sla_hours(
        queue_policy.parse_sla_hours(settings.sla_hours),
        report if isinstance(report, str) else None,
        item.reason,
    )
    item.due_at = queue_policy.due_at(start, hours)
    item.rank_at = queue_policy.rank_at(start, item.priority, settings.priority_point_minutes)


def exclude(session: Session, item_id: int, user_id: int, why: str) -> None:
    """Never serve ``item_id`` to ``user_id`` again (skipped, first reviewer of a
    four-eyes removal, earlier decider of an appealed item)."""
    if session.get(ItemExclusion, (item_id, user_id)) is None:
        session.add(ItemExclusion(item_id=item_id, user_id=user_id, why=why))
        session.flush()
