"""Routing is a pure table: signals in, verdict out."""

from __future__ import annotations

import pytest

from moderation.domain import BankAction, Match, Route
from moderation.routing import RoutingPolicy, route

POLICY = RoutingPolicy(
    review_threshold=0.6, auto_remove_pdq_distance=20, pdq_match_distance=31, pdq_min_quality=50
)


def m(action: BankAction, signal: str = "pdq", distance: int = 0, bank: str = "b") -> Match:
    return Match(bank, action, 1, signal, distance)


AUTO, REVIEW = BankAction.AUTO_REMOVE, BankAction.REVIEW


@pytest.mark.parametrize(
    ("matches", "score", "quality", "route_", "reason"),
    [
        # confident auto_remove matches remove at once
        ([m(AUTO, "sha256")], 0.1, 100, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        ([m(AUTO, "md5")], None, 0, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        ([m(AUTO, "pdq", 0)], 0.0, 90, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        ([m(AUTO, "pdq", 20)], 0.0, 50, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        # ... but not beyond the auto-remove distance, or on a low-quality hash
        ([m(AUTO, "pdq", 21)], 0.0, 90, Route.REVIEW, "bank_match_review"),
        ([m(AUTO, "pdq", 5)], 0.0, 49, Route.REVIEW, "bank_match_review"),
        # review banks always review, whatever the score
        ([m(REVIEW, "sha256")], 0.0, 90, Route.REVIEW, "bank_match_review"),
        ([m(REVIEW, "pdq", 30)], 0.99, 90, Route.REVIEW, "bank_match_review"),
        # one confident auto match wins over review matches
        ([m(REVIEW, "pdq", 1), m(AUTO, "sha256")], 0.0, 90, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        # classifier only
        ([], 0.6, 90, Route.REVIEW, "classifier_score"),
        ([], 0.95, 90, Route.REVIEW, "classifier_score"),
        ([], 0.5999, 90, Route.ALLOW, "below_threshold"),
        ([], 0.0, 90, Route.ALLOW, "below_threshold"),
        ([], None, 90, Route.ALLOW, "below_threshold"),
    ],
)
def test_route_table(matches, score, quality, route_, reason):
    verdict = route(matches, score, quality, POLICY)
    assert (verdict.route, verdict.reason) == (route_, reason)
    assert 0 <= verdict.priority <= 100


def test_matches_outrank_classifier_scores_and_higher_scores_come_first():
    top_score = route([], 1.0, 90, POLICY).priority
    weakest_match = route([m(REVIEW, "pdq", 31)], 0.0, 90, POLICY).priority
    closest_match = route([m(REVIEW, "pdq", 0)], 0.0, 90, POLICY).priority
    assert weakest_match > top_score
    assert closest_match > weakest_match
    assert route([], 0.9, 90, POLICY).priority > route([], 0.7, 90, POLICY).priority


def test_matches_are_reported_best_first():
    verdict = route([m(REVIEW, "pdq", 12), m(AUTO, "pdq", 25), m(REVIEW, "pdq", 3)], 0.0, 90, POLICY)
    assert [x.distance for x in verdict.matches][:1] == [25] or verdict.matches[0].bank_action is AUTO
    assert [x.distance for x in verdict.matches if x.bank_action is REVIEW] == [3, 12]


HIGH, ALLOW = BankAction.REVIEW_HIGH, BankAction.ALLOW


def q(action: BankAction, signal: str = "pdq", distance: int = 0) -> Match:
    return Match("b", action, 2, signal, distance, quarantined=True)


def v(frames: int, distance: int) -> Match:
    return Match("b", AUTO, 4, "vpdq", distance, share=1.0, frames=frames)


@pytest.mark.parametrize(
    ("matches", "score", "route_", "reason"),
    [
        # allowlists suppress classifier-only flags ...
        ([m(ALLOW, "pdq", 4)], 0.99, Route.ALLOW, "allowlist_match"),
        ([m(ALLOW, "sha256")], 0.7, Route.ALLOW, "allowlist_match"),
        # ... but never an auto_remove or review match
        ([m(ALLOW, "sha256"), m(AUTO, "sha256")], 0.99, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        ([m(ALLOW, "sha256"), m(REVIEW, "pdq", 9)], 0.0, Route.REVIEW, "bank_match_review"),
        # a quarantined allowlist entry suppresses nothing
        ([q(ALLOW)], 0.99, Route.REVIEW, "classifier_score"),
        ([q(ALLOW)], 0.1, Route.ALLOW, "below_threshold"),
        # a quarantined auto_remove entry falls back to review
        ([q(AUTO, "sha256")], 0.0, Route.REVIEW, "bank_match_review"),
        ([q(AUTO, "sha256"), m(AUTO, "md5")], 0.0, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        # review_high reviews
        ([m(HIGH, "pdq", 3)], 0.0, Route.REVIEW, "bank_match_review"),
        # a video match removes with enough matching frames within the distance
        ([v(3, 20)], 0.0, Route.AUTO_REMOVE, "bank_match_auto_remove"),
        ([v(2, 20)], 0.0, Route.REVIEW, "bank_match_review"),
        ([v(9, 25)], 0.0, Route.REVIEW, "bank_match_review"),
        # a weak allowlist match (too far, or a flat variant) suppresses nothing
        ([m(ALLOW, "pdq", 25)], 0.99, Route.REVIEW, "classifier_score"),
        (
            [Match("b", ALLOW, 3, "pdq", 2, variant="trimmed", quality=10)],
            0.99,
            Route.REVIEW,
            "classifier_score",
        ),
        # the matching variant's quality decides, not the original's
        (
            [Match("b", AUTO, 3, "pdq", 2, variant="trimmed", quality=10)],
            0.0,
            Route.REVIEW,
            "bank_match_review",
        ),
    ],
)
def test_allowlists_quarantine_and_review_high(matches, score, route_, reason):
    verdict = route(matches, score, 90, POLICY)
    assert (verdict.route, verdict.reason) == (route_, reason)


def test_review_high_and_quarantined_removals_outrank_plain_review():
    high = route([m(HIGH, "pdq", 10)], 0.0, 90, POLICY).priority
    quarantined = route([q(AUTO, "pdq", 10)], 0.0, 90, POLICY).priority
    plain = route([m(REVIEW, "pdq", 10)], 0.0, 90, POLICY).priority
    assert high > plain and quarantined > plain
