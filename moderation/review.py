"""Moderator decisions: the one place where a review changes state.

``decide`` validates the claim, records the decision in the outbox, writes the
audit record and, for a confirmed removal, adds the item's hashes to the
``confirmed`` bank (action ``auto_remove``) so the next copy never reaches a
human. Everything happens in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from moderation.domain import Action, BankAction, ItemState, Source, Tier
from moderation.storage import audit, banks, exchange_store, outbox, queue
from moderation.storage.models import Decision, Item, User, utcnow

# Reason codes a moderator chooses from. Stable: they appear in decision events.
REASONS: dict[str, str] = {
    "ncii": "Non-consensual intimate imagery",
    "adult_nudity": "Adult nudity against policy",
    "suspected_minor": "Suspected minor (escalate)",
    "not_violating": "Not violating",
    "unclear": "Unclear, needs a senior look",
}
ACTIONS = (Action.REMOVE, Action.ALLOW, Action.ESCALATE)


class ReviewError(ValueError):
    """A decision that cannot be applied; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DecisionResult:
    decision: Decision
    banked: int  # hashes added to the confirmed bank


def decide(
    session: Session,
    item: Item,
    user: User,
    action: str,
    reason: str,
    note: str = "",
    pdq_min_quality: int = 50,
) -> DecisionResult:
    try:
        chosen = Action(action)
    except ValueError:
        raise ReviewError(f"unknown action {action!r}; use remove, allow or escalate", 400) from None
    if reason not in REASONS:
        raise ReviewError(f"unknown reason {reason!r}; use one of {', '.join(REASONS)}", 400)
    if not queue.holds_live_claim(item, user):
        raise ReviewError("you do not hold a live claim on this item; claim it again with 'next'")
    if chosen is Action.ESCALATE and item.tier in (Tier.SENIOR, Tier.RESTRICTED):
        raise ReviewError("item is already in the escalation tier; remove or allow it", 400)
    if reason == "suspected_minor" and chosen is not Action.ESCALATE and item.tier != Tier.RESTRICTED:
        # Moderators escalate; admins then act on it within their reporting process.
        raise ReviewError("suspected minor must be escalated, never decided directly", 400)

    decision = outbox.add_decision(
        session, item, chosen, Source.MODERATOR, reason, moderator=user.username, note=note
    )
    key = decision.idempotency_key
    banked = 0
    if chosen is Action.ESCALATE:
        item.tier = Tier.RESTRICTED.value if reason == "suspected_minor" else Tier.SENIOR.value
        queue.release(session, item)
    else:
        item.state = ItemState.DECIDED.value
        item.lease_expires_at = None
        item.decided_at = utcnow()
        if chosen is Action.REMOVE:
            bank = banks.get_or_create_bank(
                session, banks.CONFIRMED_BANK, BankAction.AUTO_REMOVE, "Removals confirmed by moderators"
            )
            signals = {"sha256": item.sha256, "md5": item.md5}
            if item.vpdq:
                signals["vpdq"] = item.vpdq
            elif item.pdq and item.pdq_quality >= pdq_min_quality:
                # A low-quality PDQ (flat or tiny image) would match unrelated images.
                signals["pdq"] = item.pdq
            banked = banks.add_signals(
                session,
                bank,
                signals,
                added_by=user.username,
                source_item_id=item.id,
                note=reason,
            )
    if chosen is not Action.ESCALATE:
        exchange_store.queue_feedback(session, item, blocked=chosen is Action.REMOVE)
    audit.record(
        session,
        user.username,
        f"decision.{chosen.value}",
        item.id,
        reason=reason,
        note=note,
        idempotency_key=key,
        banked=banked,
    )
    return DecisionResult(decision, banked)
