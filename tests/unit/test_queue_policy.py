"""Queue order and review deadlines (moderation/queue_policy.py): pure tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moderation import queue_policy as qp

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "table"),
    [
        ("ncii=48,default=48", {"ncii": 48.0, "default": 48.0}),
        ("ncii=48", {"ncii": 48.0, "default": 48.0}),  # default added
        (" ncii = 24 , spam=0.5 ,", {"ncii": 24.0, "spam": 0.5, "default": 48.0}),
        ("default=12", {"default": 12.0}),
        ("", {"default": 48.0}),
    ],
)
def test_parse_sla_hours(text, table):
    assert qp.parse_sla_hours(text) == table


@pytest.mark.parametrize("text", ["ncii", "ncii=", "=48", "ncii=0", "ncii=-1", "ncii=soon", "ncii=nan"])
def test_parse_sla_hours_refuses_what_is_not_reason_equals_positive_hours(text):
    with pytest.raises(ValueError, match="SLA_HOURS"):
        qp.parse_sla_hours(text)


@pytest.mark.parametrize(
    ("reasons", "hours"),
    [
        (("ncii", "classifier_score"), 48.0),  # the report reason wins
        ((None, "bank_match_review"), 6.0),  # no report: the routing reason
        (("spam", "bank_match_review"), 6.0),  # an unknown report reason falls through
        (("spam", "classifier_score"), 72.0),  # neither named: the default
        ((), 72.0),
    ],
)
def test_sla_hours_takes_the_first_reason_the_table_names(reasons, hours):
    table = {"ncii": 48.0, "bank_match_review": 6.0, "default": 72.0}
    assert qp.sla_hours(table, *reasons) == hours


def test_due_at_and_rank_at():
    assert qp.due_at(T0, 48) == T0 + timedelta(hours=48)
    assert qp.due_at(T0, 0.5) == T0 + timedelta(minutes=30)
    assert qp.rank_at(T0, 0, 15) == T0
    assert qp.rank_at(T0, 80, 15) == T0 - timedelta(hours=20)


@pytest.mark.parametrize(
    ("a", "b", "first"),
    [
        # (arrived hours ago, priority) of two items: which is served first at 15 min/point.
        ((0, 80), (12, 40), "b"),  # 12 h of waiting + 40 points beat 80 points now (22 h vs 20 h)
        ((0, 80), (8, 40), "a"),  # 18 h vs 20 h
        ((5, 10), (0, 40), "b"),  # 30 points outweigh 5 h of waiting (7.5 h)
        ((3, 50), (3, 50), "tie"),
    ],
)
def test_rank_trades_priority_against_waiting_time(a, b, first):
    rank = {k: qp.rank_at(T0 - timedelta(hours=h), p, 15) for k, (h, p) in {"a": a, "b": b}.items()}
    expected = "tie" if rank["a"] == rank["b"] else min(rank, key=lambda k: rank[k])
    assert expected == first


@pytest.mark.parametrize(
    ("due", "seconds", "near"),
    [
        (None, None, False),
        (T0 + timedelta(hours=7), 7 * 3600, False),
        (T0 + timedelta(hours=6), 6 * 3600, False),  # exactly SLA_NEAR_HOURS left: not yet
        (T0 + timedelta(hours=5, minutes=59), 5 * 3600 + 59 * 60, True),
        (T0 + timedelta(milliseconds=500), 0, True),
        (T0 - timedelta(milliseconds=500), -1, True),  # breached
        (T0 - timedelta(hours=3), -3 * 3600, True),
    ],
)
def test_seconds_left_and_near(due, seconds, near):
    assert qp.seconds_left(due, T0) == seconds
    assert qp.is_near(due, T0, 6) is near


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (61, "1 min"),
        (3599, "59 min"),
        (3600, "1 h"),
        (9000, "2 h 30 min"),
        (86400, "1 d"),
        (86400 + 4 * 3600 + 59, "1 d 4 h"),
        (-10800, "3 h"),
    ],
)
def test_describe_duration(seconds, text):
    assert qp.describe_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "no deadline"),
        (5 * 3600 + 600, "5 h 10 min left"),
        (0, "0 s left"),
        (-1, "breached 1 s ago"),
        (-3 * 3600, "breached 3 h ago"),
    ],
)
def test_describe_sla(seconds, text):
    assert qp.describe_sla(seconds) == text
