"""One decision for a group of near-duplicates (storage/groups.py).

``decide_group`` applies a moderator's action, reason and note to several open
items of one group in the caller's transaction: each member gets its own
decision (outbox), its own audit records and, for a removal, its hashes banked,
exactly as ``review.decide`` does for one item, which it calls per member. It
leaves alone members that another moderator holds (a live claim, or a row
another transaction has locked: FOR UPDATE SKIP LOCKED), members in a queue the
user may not work or (for "apply to the group") in another queue than the item
on screen, and members the user has an exclusion for (skipped, four-eyes first
reviewer, earlier decider of an appeal). If ``review.decide`` refuses any member
(a suspected minor, a four-eyes rule), it raises and the caller rolls back the
whole group decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import policy, review
from moderation.config import Settings
from moderation.domain import ItemState, Tier
from moderation.storage import audit, groups, queue
from moderation.storage.models import Item, ItemExclusion, User, utcnow

DEFAULT_SETTINGS = Settings()  # the claim lease of members, when no settings are given
# Members decided per request: a removal banks hashes and writes several rows
# per item, so a huge group is decided in steps instead of one long transaction.
MAX_MEMBERS = 200

# Why a member was left alone.
HELD = "held by another moderator"
OTHER_QUEUE = "in another queue"
EXCLUDED = "not yours to decide (skipped, first reviewer or earlier decider)"
OWN_REVIEW = "an appeal or second review, which needs its own look"
LIMIT = "over the per-request limit"
WHY_ORDER = (HELD, OTHER_QUEUE, EXCLUDED, OWN_REVIEW, LIMIT)

VERBS = {"remove": "removed", "allow": "allowed", "escalate": "escalated"}


@dataclass
class GroupDecision:
    key: str | None
    action: str
    reason: str
    results: list[tuple[int, review.DecisionResult]] = field(default_factory=list)
    left_alone: list[tuple[int, str]] = field(default_factory=list)  # (item id, why)

    @property
    def decided_ids(self) -> list[int]:
        return [item_id for item_id, _ in self.results]

    def summary(self) -> str:
        """E.g. "Removed 5 items of group entry:12 (1 held by another moderator, left alone)."."""
        outcomes = [r.outcome for _, r in self.results]
        done = outcomes.count(review.DECIDED) + outcomes.count(review.ESCALATED)
        of_group = f" of group {self.key}" if self.key else ""
        pieces = []
        if done or not self.results:
            pieces.append(f"{VERBS.get(self.action, self.action)} {_items(done)}{of_group}")
            of_group = ""
        for outcome, what in (
            (review.FIRST_REVIEW, "sent for a second review (four eyes)"),
            (review.DISAGREEMENT, "sent to seniors (disagreeing with the first review)"),
        ):
            n = outcomes.count(outcome)
            if n:
                pieces.append(f"{_items(n)}{of_group} {what}")
                of_group = ""
        text = "; ".join(pieces)
        counts = {why: sum(1 for _, w in self.left_alone if w == why) for why in WHY_ORDER}
        alone = [f"{n} {why}" for why, n in counts.items() if n]
        if alone:
            text += f" ({', '.join(alone)}, left alone)"
        return text[0].upper() + text[1:] + "."


def _items(n: int) -> str:
    return f"{n} item{'' if n == 1 else 's'}"


def validate(action: str, reason: str, settings: Settings | None) -> None:
    """Refuse an unknown action or reason before anything is claimed."""
    reasons = policy.reasons(settings.policy_reasons) if settings else review.REASONS
    review.check_choice(action, reason, reasons)


def decide_group(
    session: Session,
    item: Item,
    user: User,
    action: str,
    reason: str,
    note: str = "",
    *,
    settings: Settings | None = None,
    member_ids: Iterable[int] | None = None,
    now: datetime | None = None,
) -> GroupDecision:
    """Decide ``item``'s group.

    Without ``member_ids`` ("apply to the group" on the item page): ``item``
    first (the user must hold its claim, as for a single decision), then every
    other open member in the same queue. With ``member_ids`` (bulk action on
    the group page): those open members only, ``item`` included only if named,
    in any queue the user works.
    """
    validate(action, reason, settings)
    now = now or utcnow()
    lease_seconds = (settings or DEFAULT_SETTINGS).claim_lease_seconds
    key = item.group_key
    outcome = GroupDecision(key, action, reason)
    # "Apply to the group" stays in the item's queue (its tier before an escalation moves it).
    same_tier = item.tier if member_ids is None else None
    if member_ids is None:
        outcome.results.append((item.id, _decide(session, item, user, action, reason, note, settings)))
        chosen: set[int] | None = None
    else:
        chosen = set(member_ids)
    if key is not None and (chosen is None or chosen):
        members, busy, over = groups.lock_open_members(session, key, chosen, limit=MAX_MEMBERS + 1)
        outcome.left_alone.extend((i, HELD) for i in busy)
        outcome.left_alone.extend((i, LIMIT) for i in over if i != item.id)
        _decide_members(session, outcome, members, user, note, settings, lease_seconds, now, same_tier, item)
    elif chosen and item.id in chosen:
        # A group of one: the bulk form can still decide the item itself.
        members = [session.get(Item, item.id, with_for_update=True, populate_existing=True) or item]
        _decide_members(session, outcome, members, user, note, settings, lease_seconds, now, None, item)
    return outcome


def _decide_members(
    session: Session,
    outcome: GroupDecision,
    members: list[Item],
    user: User,
    note: str,
    settings: Settings | None,
    lease_seconds: int,
    now: datetime,
    same_tier: str | None,
    item: Item,
) -> None:
    tiers = queue.claimable_tiers(user.role)
    excluded = _exclusions(session, user, [m.id for m in members])
    budget = MAX_MEMBERS - len(outcome.results)
    for member in members:
        if member.id in outcome.decided_ids or member.state not in groups.OPEN_STATES:
            continue
        why = _left_alone_because(member, item, user, now, tiers, excluded, same_tier)
        if why is None and budget <= 0:
            why = LIMIT
        if why is not None:
            outcome.left_alone.append((member.id, why))
            continue
        if not queue.holds_live_claim(member, user, now):
            member.state = ItemState.CLAIMED.value
            member.claimed_by = user.id
            member.lease_expires_at = now + timedelta(seconds=lease_seconds)
        result = _decide(session, member, user, outcome.action, outcome.reason, note, settings)
        outcome.results.append((member.id, result))
        audit.record(
            session,
            user.username,
            "group.decision",
            member.id,
            group=outcome.key,
            from_item=item.id,
            decision=outcome.action,
            reason=outcome.reason,
            outcome=result.outcome,
            idempotency_key=result.published.idempotency_key if result.published else None,
        )
        budget -= 1


def _needs_own_review(member: Item, item: Item) -> bool:
    """An appeal's statement is read on its own page, so appeals are never
    decided along with another item; second reviews only along with another
    second review (the one on screen, whose media and first review were seen)."""
    if member.tier == Tier.APPEAL:
        return True
    return member.tier == Tier.SECOND_REVIEW and item.tier != Tier.SECOND_REVIEW


def _left_alone_because(
    member: Item,
    item: Item,
    user: User,
    now: datetime,
    tiers: tuple[str, ...],
    excluded: set[int],
    same_tier: str | None,
) -> str | None:
    held_by_other = (
        member.state == ItemState.CLAIMED.value
        and member.claimed_by != user.id
        and member.lease_expires_at is not None
        and member.lease_expires_at > now
    )
    if held_by_other:
        return HELD
    if member.tier not in tiers or (same_tier is not None and member.tier != same_tier):
        return OTHER_QUEUE
    if member.id in excluded or (member.first_review or {}).get("user_id") == user.id:
        return EXCLUDED
    if member.id != item.id and _needs_own_review(member, item):
        return OWN_REVIEW
    return None


def _exclusions(session: Session, user: User, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    return set(
        session.scalars(
            select(ItemExclusion.item_id).where(
                ItemExclusion.user_id == user.id, ItemExclusion.item_id.in_(ids)
            )
        )
    )


def _decide(
    session: Session, item: Item, user: User, action: str, reason: str, note: str, settings: Settings | None
) -> review.DecisionResult:
    try:
        return review.decide(session, item, user, action, reason, note, settings=settings)
    except review.ReviewError as exc:
        raise review.ReviewError(f"item {item.id}: {exc}", exc.status) from exc
