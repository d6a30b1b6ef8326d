"""Signals -> verdict. Pure: no I/O, table-tested in tests/unit/test_routing.py.

Order of precedence:

1. A *confident* match in an ``auto_remove`` bank removes at once and queues the
   item for verification. Confident means an exact cryptographic hash match, a
   PDQ match within ``auto_remove_pdq_distance`` whose matching hash has a PDQ
   quality of at least ``pdq_min_quality`` (low-quality PDQ hashes of flat
   images collide), or a vPDQ match of at least ``vpdq_min_frames`` frames
   within that distance (one generic frame must not remove a short clip). A
   quarantined entry (flood control) is never confident: its match is reviewed
   with high priority instead.
2. Any other match in an ``auto_remove``, ``review_high`` or ``review`` bank sends
   the item to review, ahead of classifier-only items (``review_high`` and
   ``auto_remove`` matches first).
3. A match in an ``allow`` bank (an allowlist of known benign images) allows the
   upload even if the classifier would flag it, if the match is as strong as
   rule 1 asks. Allowlists never override 1 or 2, and a quarantined allowlist
   entry suppresses nothing.
4. A classifier score at or above ``review_threshold`` sends it to review, higher
   scores first.
5. Otherwise the upload is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from moderation.domain import BankAction, Match, Route, Verdict

# Priority bands (0..100). Bank matches always outrank classifier-only flags.
PRIORITY_VERIFY_AUTO_REMOVAL = 40
PRIORITY_MATCH_BASE = 70  # + up to 30 for closeness
PRIORITY_SCORE_BASE = 10  # + up to 50 for score


@dataclass(frozen=True)
class RoutingPolicy:
    review_threshold: float = 0.6
    auto_remove_pdq_distance: int = 31
    pdq_match_distance: int = 31
    pdq_min_quality: int = 50
    vpdq_min_frames: int = 3


def is_confident(match: Match, pdq_quality: int, policy: RoutingPolicy) -> bool:
    """Strong enough to act on without a human: an exact hash; a PDQ match within
    ``auto_remove_pdq_distance`` on a hash (of the variant that matched) of at
    least ``pdq_min_quality``; a vPDQ match of at least ``vpdq_min_frames``
    distinct frames within that distance. Never a quarantined entry."""
    if match.quarantined:
        return False
    if match.signal in ("sha256", "md5"):
        return True
    if match.distance > policy.auto_remove_pdq_distance:
        return False
    if match.signal == "vpdq":
        return (match.frames or 0) >= policy.vpdq_min_frames
    quality = match.quality if match.quality is not None else pdq_quality
    return quality >= policy.pdq_min_quality


def match_priority(match: Match, policy: RoutingPolicy) -> int:
    limit = max(policy.pdq_match_distance, 1)
    closeness = 1.0 - min(match.distance, limit) / limit
    high = match.bank_action in (BankAction.AUTO_REMOVE, BankAction.REVIEW_HIGH)
    bonus = 30 if high else 20
    return PRIORITY_MATCH_BASE + round(bonus * closeness)


def score_priority(score: float, policy: RoutingPolicy) -> int:
    span = max(1.0 - policy.review_threshold, 1e-9)
    above = min(max(score - policy.review_threshold, 0.0) / span, 1.0)
    return PRIORITY_SCORE_BASE + round(50 * above)


def route(
    matches: Sequence[Match],
    score: float | None,
    pdq_quality: int,
    policy: RoutingPolicy,
) -> Verdict:
    """Decide what happens to one upload. ``score`` is None when no classifier ran."""
    ordered = tuple(
        sorted(matches, key=lambda m: (_ACTION_ORDER[m.bank_action], m.quarantined, m.distance, m.entry_id))
    )
    confident = [
        m for m in ordered if m.bank_action is BankAction.AUTO_REMOVE and is_confident(m, pdq_quality, policy)
    ]
    if confident:
        return Verdict(
            Route.AUTO_REMOVE, PRIORITY_VERIFY_AUTO_REMOVAL, "bank_match_auto_remove", ordered, score
        )
    flagging = [m for m in ordered if m.bank_action is not BankAction.ALLOW]
    if flagging:
        priority = max(match_priority(m, policy) for m in flagging)
        return Verdict(Route.REVIEW, min(priority, 100), "bank_match_review", ordered, score)
    # An allowlist only vouches for an upload on a strong match: a weak PDQ
    # match must not wave through what the classifier flagged.
    allowlisted = [m for m in ordered if is_confident(m, pdq_quality, policy)]
    if allowlisted:
        return Verdict(Route.ALLOW, 0, "allowlist_match", ordered, score)
    if score is not None and score >= policy.review_threshold:
        return Verdict(Route.REVIEW, score_priority(score, policy), "classifier_score", ordered, score)
    return Verdict(Route.ALLOW, 0, "below_threshold", ordered, score)


_ACTION_ORDER = {
    BankAction.AUTO_REMOVE: 0,
    BankAction.REVIEW_HIGH: 1,
    BankAction.REVIEW: 2,
    BankAction.ALLOW: 3,
}
