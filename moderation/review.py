"""Moderator decisions: the one place where a review changes state.

``decide`` validates the claim and the policy reason, records the decision in
the outbox, writes the audit record and, for a confirmed removal, adds the
item's hashes to the ``confirmed`` bank (action ``auto_remove``) so the next
copy never reaches a human. Everything happens in the caller's transaction.

Policy (moderation/policy.py, docs/review-console.md):

- every decision gives a reason from ``POLICY_REASONS``, and built-in codes
  only go with their actions (``not_violating`` allows, ``ncii`` never allows...);
- ``suspected_minor`` is escalated to the restricted queue (admins only). What
  an admin decides there is published with ``"restricted": true``; it never
  banks and never reports to a hash exchange (the admins' reporting process
  decides what happens to the hashes);
- four eyes (``FOUR_EYES_REMOVALS``): a removal that would add hashes to the
  confirmed bank is only a first review until a different person confirms it.
  Nothing is published before then. A second reviewer who allows instead sends
  the item to the senior tier with both opinions on record;
- a decision on an appealed item (storage/appeals.py) is a new decision that
  names the appeal and the decision it supersedes; allowing an item whose
  removal was appealed withdraws the bank entries that removal created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import policy, text_limits
from moderation.config import Settings
from moderation.domain import Action, BankAction, EntrySpec, EntryStatus, ItemState, Source, Tier
from moderation.storage import appeals, audit, banks, evidence, exchange_store, groups, outbox, queue
from moderation.storage.models import Appeal, Bank, BankEntry, Decision, Item, User, utcnow

# The built-in reasons; the console and API show the configured ones (policy.reasons).
REASONS: Mapping[str, str] = policy.DEFAULT_REASONS
ACTIONS = (Action.REMOVE, Action.ALLOW, Action.ESCALATE)
AUDITED_EXTRAS = ("second_moderator", "first_reason", "appeal_id", "supersedes")

# What became of a decision request (DecisionResult.outcome).
DECIDED = "decided"  # remove or allow: published, item closed
ESCALATED = "escalated"  # published as escalate, item waits in the senior or restricted tier
FIRST_REVIEW = "first_review"  # four eyes: waits for a second reviewer, nothing published
DISAGREEMENT = "disagreement"  # four eyes: the second reviewer allowed; sent to seniors, nothing published


class ReviewError(ValueError):
    """A decision that cannot be applied; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DecisionResult:
    published: Decision | None  # None when nothing was published (first review, disagreement)
    banked: int  # hashes added to the confirmed bank
    outcome: str = DECIDED
    withdrawn: int = 0  # confirmed-bank entries withdrawn by an overturned removal

    @property
    def decision(self) -> Decision:
        """The published decision, for outcomes that publish one (``decided``,
        ``escalated``); check ``published`` where four eyes may hold the item."""
        if self.published is None:
            raise RuntimeError(f"no decision was published: the outcome was {self.outcome}")
        return self.published


def decide(
    session: Session,
    item: Item,
    user: User,
    action: str,
    reason: str,
    note: str = "",
    pdq_min_quality: int = 50,
    *,
    settings: Settings | None = None,
) -> DecisionResult:
    """Apply ``user``'s decision on ``item`` (which they must hold a live claim on).

    ``settings`` supplies POLICY_REASONS, FOUR_EYES_REMOVALS and PDQ_MIN_QUALITY;
    without it the built-in reasons apply and four eyes is off."""
    reasons = policy.reasons(settings.policy_reasons) if settings else policy.DEFAULT_REASONS
    if settings is not None:
        pdq_min_quality = settings.pdq_min_quality
    try:  # the boundaries check it too; here it holds for every caller (docs: text limits)
        text_limits.check("note", note, text_limits.NOTE)
    except text_limits.TextTooLong as exc:
        raise ReviewError(str(exc), 400) from None
    chosen = _check(item, user, action, reason, reasons)
    appeal = appeals.open_appeal(session, item)
    if chosen is Action.ESCALATE:
        return _escalate(session, item, user, reason, note, appeal)
    if chosen is Action.ALLOW and item.tier == Tier.SECOND_REVIEW and item.first_review:
        return _disagree(session, item, user, reason, note)

    restricted = item.tier == Tier.RESTRICTED
    first = item.first_review or None
    banked = 0
    if chosen is Action.REMOVE and not restricted:
        bank = banks.get_or_create_bank(
            session, banks.CONFIRMED_BANK, BankAction.AUTO_REMOVE, "Removals confirmed by moderators"
        )
        signals = bank_signals(item, pdq_min_quality)
        four_eyes = settings is not None and settings.four_eyes_removals
        if four_eyes and first is None and would_add(session, bank, signals):
            return _hold_for_second_review(session, item, user, reason, note, appeal)
        # A new confirmed removal revives entries an overturned appeal withdrew:
        # it is a fresh human judgement that these hashes must be blocked.
        banked = banks.add_signals(
            session, bank, signals, added_by=user.username, source_item_id=item.id, note=reason, revive=True
        )

    extra: dict[str, Any] = {"restricted": restricted, "banked": banked}
    moderator = user.username
    if first is not None and chosen is Action.REMOVE and not restricted:
        # Four eyes: the first reviewer's removal, confirmed by this user.
        moderator = str(first.get("moderator"))
        extra.update(second_moderator=user.username, first_reason=first.get("reason"))
    if appeal is not None:
        extra.update(appeal_id=appeal.appeal_id, supersedes=appeals.superseded_key(session, appeal))
    decision = outbox.add_decision(
        session, item, chosen, Source.MODERATOR, reason, moderator=moderator, note=note, extra=extra
    )
    if chosen is Action.REMOVE:  # evidence first: it commits with the decision or not at all
        evidence.preserve(session, item, decision, user.username, settings=settings)
    key = decision.idempotency_key
    item.state = ItemState.DECIDED.value
    item.lease_expires_at = None
    item.decided_at = utcnow()
    item.first_review = None
    groups.forget(session, [item.id])  # a decided item no longer gathers near-duplicates
    if not restricted:
        exchange_store.queue_feedback(session, item, blocked=chosen is Action.REMOVE)
    withdrawn = 0
    if appeal is not None:
        session.flush()  # the decision's id, for the appeal row
        withdrawn = appeals.resolve(session, appeal, item, decision, actor=user.username)
    audit.record(
        session,
        user.username,
        f"decision.{chosen.value}",
        item.id,
        reason=reason,
        note=note,
        idempotency_key=key,
        banked=banked,
        restricted=restricted,
        **{k: extra[k] for k in AUDITED_EXTRAS if k in extra},
    )
    return DecisionResult(decision, banked, DECIDED, withdrawn)


def check_choice(action: str, reason: str, reasons: Mapping[str, str]) -> Action:
    """The action, if it is one and ``reason`` is a known reason that goes with
    it (whoever decides, whatever the item); else ReviewError."""
    try:
        chosen = Action(action)
    except ValueError:
        raise ReviewError(f"unknown action {action!r}; use remove, allow or escalate", 400) from None
    if reason not in reasons:
        raise ReviewError(f"unknown reason {reason!r}; use one of {', '.join(reasons)}", 400)
    problem = policy.pairing_error(reason, chosen)
    if problem:
        raise ReviewError(problem, 400)
    return chosen


def _check(item: Item, user: User, action: str, reason: str, reasons: Mapping[str, str]) -> Action:
    """The chosen action, if this decision is allowed at all; else ReviewError."""
    chosen = check_choice(action, reason, reasons)
    if not queue.holds_live_claim(item, user):
        raise ReviewError("you do not hold a live claim on this item; claim it again with 'next'")
    first = item.first_review or {}
    if first.get("user_id") == user.id:
        raise ReviewError("you gave this item its first review: a different moderator must decide it", 403)
    if (first.get("second") or {}).get("user_id") == user.id:
        raise ReviewError("you disagreed with this item's first review: a senior must decide it", 403)
    minor = reason == policy.SUSPECTED_MINOR
    if minor and chosen is Action.REMOVE and item.tier != Tier.RESTRICTED:
        # Moderators escalate; admins then act on it within their reporting process.
        raise ReviewError("suspected minor must be escalated, never decided directly", 400)
    if chosen is Action.ESCALATE and item.tier == Tier.RESTRICTED:
        raise ReviewError("item is already in the restricted queue; remove or allow it", 400)
    if chosen is Action.ESCALATE and item.tier == Tier.SENIOR and not minor:
        raise ReviewError(
            "item is already in the escalation tier; remove or allow it "
            "(only a suspected minor goes further)",
            400,
        )
    return chosen


def _escalate(
    session: Session, item: Item, user: User, reason: str, note: str, appeal: Appeal | None
) -> DecisionResult:
    """Published as ``escalate``; the item waits for a senior, or for an admin
    in the restricted queue when it may show a minor."""
    restricted = reason == policy.SUSPECTED_MINOR
    extra: dict[str, Any] = {"restricted": restricted, "banked": 0}
    if appeal is not None:
        extra["appeal_id"] = appeal.appeal_id
    decision = outbox.add_decision(
        session,
        item,
        Action.ESCALATE,
        Source.MODERATOR,
        reason,
        moderator=user.username,
        note=note,
        extra=extra,
    )
    item.tier = Tier.RESTRICTED.value if restricted else Tier.SENIOR.value
    if restricted:
        item.first_review = None  # nothing in the restricted queue banks: four eyes does not apply
    queue.release(session, item)
    audit.record(
        session,
        user.username,
        "decision.escalate",
        item.id,
        reason=reason,
        note=note,
        idempotency_key=decision.idempotency_key,
        banked=0,
        restricted=restricted,
        tier=item.tier,
    )
    return DecisionResult(decision, 0, ESCALATED)


def _hold_for_second_review(
    session: Session, item: Item, user: User, reason: str, note: str, appeal: Appeal | None
) -> DecisionResult:
    """Four eyes: record the first review, queue the item for somebody else."""
    now = utcnow()
    item.first_review = {
        "user_id": user.id,
        "moderator": user.username,
        "reason": reason,
        "note": note,
        "at": now.isoformat(),
    }
    item.tier = Tier.SECOND_REVIEW.value
    queue.release(session, item)
    queue.exclude(session, item.id, user.id, "first_review")
    details: dict[str, Any] = {"reason": reason, "note": note}
    if appeal is not None:
        details["appeal_id"] = appeal.appeal_id
    audit.record(session, user.username, "decision.first_review", item.id, **details)
    return DecisionResult(None, 0, FIRST_REVIEW)


def _disagree(session: Session, item: Item, user: User, reason: str, note: str) -> DecisionResult:
    """Four eyes: the second reviewer would allow what the first removed. Neither
    opinion is published; a senior decides with both on record."""
    first = dict(item.first_review or {})
    second = {
        "user_id": user.id,
        "moderator": user.username,
        "action": "allow",
        "reason": reason,
        "note": note,
    }
    item.first_review = {**first, "second": {**second, "at": utcnow().isoformat()}}
    item.tier = Tier.SENIOR.value
    queue.release(session, item)
    queue.exclude(session, item.id, user.id, "decided")
    audit.record(
        session,
        user.username,
        "decision.disagreement",
        item.id,
        first_moderator=first.get("moderator"),
        first_action="remove",
        first_reason=first.get("reason"),
        first_note=first.get("note"),
        second_moderator=user.username,
        second_action="allow",
        second_reason=reason,
        second_note=note,
    )
    return DecisionResult(None, 0, DISAGREEMENT)


def bank_signals(item: Item, pdq_min_quality: int) -> dict[str, str]:
    """The hashes a confirmed removal of ``item`` puts in the confirmed bank."""
    signals = {"sha256": item.sha256, "md5": item.md5}
    if item.vpdq:
        signals["vpdq"] = item.vpdq
    elif item.pdq and item.pdq_quality >= pdq_min_quality:
        # A low-quality PDQ (flat or tiny image) would match unrelated images.
        signals["pdq"] = item.pdq
    return signals


def would_add(session: Session, bank: Bank, signals: Mapping[str, str]) -> bool:
    """Whether banking ``signals`` would make an entry of ``bank`` active: a
    hash it does not have, or one withdrawn (an overturned appeal) that a
    confirmed removal revives. Disabled entries stay disabled (an admin's call)."""
    digests = set()
    for signal, value in signals.items():
        if value:
            spec = banks.normalise_spec(EntrySpec(signal, value))
            digests.add(banks.digest(spec.signal, spec.value))
    if not digests:
        return False
    present = set(
        session.scalars(
            select(BankEntry.digest).where(
                BankEntry.bank_id == bank.id,
                BankEntry.digest.in_(digests),
                BankEntry.status != EntryStatus.WITHDRAWN.value,
            )
        )
    )
    return bool(digests - present)
