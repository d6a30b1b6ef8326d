"""The review queue: claiming items with leases, skipping, scheduling.

Order (see queue_policy): first the items near or past their SLA deadline
(``due_at`` before now + ``SLA_NEAR_HOURS``) of each of the user's tiers, most
urgent queue first (``claimable_tiers``), soonest deadline first; then
everything by ``rank_at``, tier after tier. Each of these walks is a ``LIMIT 1`` scan of a
partial index of pending items (``ix_items_queue_due`` / ``ix_items_queue_rank``),
so claiming costs the same with a thousand items waiting or a million
(bench/claim_queue.py).

Claiming is one atomic ``UPDATE ... WHERE id = COALESCE((walk 1), (walk 2), ...)
RETURNING``, each walk a ``SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1``; COALESCE
stops at the first walk that finds a row, so later walks never run. On
PostgreSQL concurrent claimers skip each other's locked rows, and the row's
state is re-checked once locked; on SQLite the whole statement runs under the
database write lock, which gives the same guarantee.

A claim is a lease: the open page renews it (``renew_lease``), and a claim left
to expire is put back to pending by the next claimer, so the walks only ever
look at pending rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from moderation import queue_policy
from moderation.config import Settings
from moderation.domain import ItemState, Role, Tier
from moderation.storage import audit
from moderation.storage.models import Item, ItemExclusion, User, utcnow

# Who works which queue, most urgent queue first.
CLAIMABLE_TIERS: dict[str, tuple[str, ...]] = {
    Role.MODERATOR: (Tier.SECOND_REVIEW, Tier.APPEAL, Tier.MODERATOR),
    Role.SENIOR: (Tier.SENIOR, Tier.SECOND_REVIEW, Tier.APPEAL, Tier.MODERATOR),
    Role.ADMIN: (Tier.RESTRICTED, Tier.SENIOR, Tier.SECOND_REVIEW, Tier.APPEAL, Tier.MODERATOR),
    Role.AUDITOR: (),
}
# Expired leases put back per claim: bounded, so one claim never does a large update.
EXPIRED_BATCH = 100
# Pending rows without a rank (inserted outside record_analysis) scheduled per claim.
UNSCHEDULED_BATCH = 500
PENDING, CLAIMED = ItemState.PENDING.value, ItemState.CLAIMED.value
_DEFAULTS = Settings()


def claimable_tiers(role: str) -> tuple[str, ...]:
    return tuple(str(t) for t in CLAIMABLE_TIERS.get(role, ()))


def current_claim(session: Session, user: User, now: datetime | None = None) -> Item | None:
    now = now or utcnow()
    return session.scalar(
        select(Item)
        .where(Item.state == CLAIMED, Item.claimed_by == user.id, Item.lease_expires_at > now)
        .order_by(Item.lease_expires_at)
        .limit(1)
    )


def claim_next_item(
    session: Session,
    user: User,
    lease_seconds: int,
    now: datetime | None = None,
    settings: Settings | None = None,
) -> Item | None:
    """Claim the next item for ``user`` in queue order (module docstring).

    A user who already holds a live claim gets that item back (its lease renewed)
    instead of a second one, so nobody can hoard items by pressing "next".
    Items the user has an exclusion for (skipped, four-eyes first reviewer,
    earlier decider of an appeal) are never served to them. The caller commits.
    """
    now = now or utcnow()
    settings = settings or _DEFAULTS
    expires = now + timedelta(seconds=lease_seconds)
    # Serialise one user's concurrent "next" requests (double clicks, two tabs) on
    # PostgreSQL; SQLite serialises writers anyway, and the NOT EXISTS below covers it.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    held = current_claim(session, user, now)
    if held is not None:
        held.lease_expires_at = expires
        return held
    tiers = claimable_tiers(user.role)
    if not tiers:
        return None
    return_expired_leases(session, now)
    schedule_unscheduled(session, tiers, settings, now)
    near = now + timedelta(hours=settings.sla_near_hours)
    holds_one = (
        select(Item.id)
        .where(Item.state == CLAIMED, Item.claimed_by == user.id, Item.lease_expires_at > now)
        .exists()
    )
    # Every walk in order, in one statement: COALESCE stops at the first walk that
    # finds an unlocked row, so later walks never run (nor lock anything). The
    # near-breach walks of all the user's queues come before any rank walk, so a
    # flood in one queue (appeals, say) never makes another queue miss its SLA.
    candidates = [_candidates(tier, user.id, near) for tier in tiers]
    walks = [
        walk.limit(1).with_for_update(skip_locked=True).scalar_subquery()
        for walk in [near_walk for near_walk, _ in candidates] + [rank_walk for _, rank_walk in candidates]
    ]
    claimed = session.execute(
        update(Item)
        .where(Item.id == func.coalesce(*walks), ~holds_one)
        .values(state=CLAIMED, claimed_by=user.id, lease_expires_at=expires)
        .returning(Item)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).scalar()
    if claimed is not None:
        return claimed
    return current_claim(session, user, now)  # None, or one a concurrent request just took


def _candidates(tier: str, user_id: int, near: datetime) -> tuple[Select[Any], Select[Any]]:
    """The two walks of one tier: near-breach items by deadline, then all by rank."""
    excluded = (
        select(ItemExclusion.item_id)
        .where(ItemExclusion.item_id == Item.id, ItemExclusion.user_id == user_id)
        .exists()
    )
    pending = select(Item.id).where(Item.state == PENDING, Item.tier == tier, ~excluded)
    return (
        pending.where(Item.due_at < near).order_by(Item.due_at, Item.id),
        pending.order_by(Item.rank_at, Item.id),
    )


def return_expired_leases(session: Session, now: datetime | None = None, limit: int = EXPIRED_BATCH) -> int:
    """Put claims whose lease ran out back to pending (rank and deadline kept),
    with an audit record each; returns how many. Rows another transaction holds
    are skipped: it is renewing, deciding or returning them itself."""
    now = now or utcnow()
    expired = session.execute(
        select(Item.id, Item.claimed_by)
        .where(Item.state == CLAIMED, Item.lease_expires_at < now)
        .order_by(Item.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not expired:
        return 0
    session.execute(
        update(Item)
        .where(Item.id.in_([row.id for row in expired]), Item.state == CLAIMED, Item.lease_expires_at < now)
        .values(state=PENDING, claimed_by=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    for row in expired:
        audit.record(session, "queue", "item.lease_expired", row.id, claimed_by=row.claimed_by)
    return len(expired)


def schedule_unscheduled(
    session: Session, tiers: Sequence[str], settings: Settings, now: datetime | None = None
) -> int:
    """Give pending items without a rank or deadline theirs (rows written before
    queue order existed, or by tools that insert items directly), so every
    pending item is reachable through the ordered indexes."""
    if not tiers:
        return 0
    rows = session.scalars(
        select(Item)
        .where(
            Item.state == PENDING, Item.tier.in_(tiers), or_(Item.rank_at.is_(None), Item.due_at.is_(None))
        )
        .limit(UNSCHEDULED_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    for item in rows:
        schedule(item, settings, now)
    if rows:
        session.flush()
    return len(rows)


def renew_lease(item: Item, user: User, lease_seconds: int, now: datetime | None = None) -> datetime | None:
    """Extend ``user``'s live claim on ``item`` (the row locked by the caller) to
    now + ``lease_seconds``; None when the claim is gone (expired, released or
    decided). The caller commits."""
    now = now or utcnow()
    if not holds_live_claim(item, user, now):
        return None
    item.lease_expires_at = now + timedelta(seconds=lease_seconds)
    return item.lease_expires_at


def release(session: Session, item: Item) -> None:
    """Back to pending, unclaimed; its rank and deadline are kept."""
    item.state = PENDING
    item.claimed_by = None
    item.lease_expires_at = None


def skip(session: Session, item: Item, user: User) -> None:
    """Return the item to the queue for everybody else: ``user`` is never served
    it again, while its rank (priority and waiting time) stays as it was."""
    release(session, item)
    exclude(session, item.id, user.id, "skipped")


def holds_live_claim(item: Item, user: User, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return (
        item.state == CLAIMED
        and item.claimed_by == user.id
        and item.lease_expires_at is not None
        and item.lease_expires_at > now
    )


def queue_depth(session: Session, now: datetime | None = None) -> Sequence[tuple[str, str, int, int]]:
    """(state, tier, priority, count) for every open item; expired claims count as pending."""
    now = now or utcnow()
    state = case(
        (and_(Item.state == CLAIMED, Item.lease_expires_at < now), PENDING),
        else_=Item.state,
    )
    rows = session.execute(
        select(state, Item.tier, Item.priority, func.count())
        .where(Item.state.in_([PENDING, CLAIMED]))
        .group_by(state, Item.tier, Item.priority)
    ).all()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def schedule(item: Item, settings: Settings, now: datetime | None = None, restart_sla: bool = False) -> None:
    """Set the item's SLA deadline and rank from its reason, arrival and priority.

    The report reason (``report_reason`` in the upload event) picks the SLA if
    ``SLA_HOURS`` names it, else the routing reason. ``restart_sla`` starts the
    deadline (and rank) from ``now``: an appeal is a new request."""
    now = now or utcnow()
    if item.created_at is None:  # not inserted yet: it arrives now, and its deadline counts from then
        item.created_at = now
    start = now if restart_sla else item.created_at
    table = queue_policy.sla_table(settings.sla_hours)
    hours = queue_policy.sla_hours(table, report_reason(item), item.reason)
    item.due_at = queue_policy.due_at(start, hours)
    item.rank_at = queue_policy.rank_at(start, item.priority or 0, settings.priority_point_minutes)


def report_reason(item: Item) -> str | None:
    """The upload event's optional ``report_reason`` (why the platform sent it), if a string."""
    report = item.event.get("report_reason") if isinstance(item.event, dict) else None
    return report if isinstance(report, str) else None


def exclude(session: Session, item_id: int, user_id: int, why: str) -> None:
    """Never serve ``item_id`` to ``user_id`` again (skipped, first reviewer of a
    four-eyes removal, earlier decider of an appealed item)."""
    if session.get(ItemExclusion, (item_id, user_id)) is None:
        session.add(ItemExclusion(item_id=item_id, user_id=user_id, why=why))
        session.flush()
