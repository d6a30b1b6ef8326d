"""Retry pacing and logging of dependency outages (events/outage.py)."""

from __future__ import annotations

import logging

from moderation.events.outage import Outage

log = logging.getLogger("tests.outage")


def test_pauses_double_to_the_cap_and_the_outage_is_logged_once(caplog):
    outage = Outage(log, "partitions paused")
    with caplog.at_level("WARNING", logger="tests.outage"):
        pauses = [outage.failed("database", RuntimeError("down")) for _ in range(30)]
    assert pauses[:5] == [0.2, 0.4, 0.8, 1.0, 1.0] and max(pauses) == 1.0
    assert [r.getMessage() for r in caplog.records] == [
        "partitions paused: database unavailable, retrying in 0.2s: down"
    ]


def test_a_long_outage_is_logged_again_at_most_every_interval(caplog):
    outage = Outage(log, "appeals", log_every_s=0.0)
    with caplog.at_level("WARNING", logger="tests.outage"):
        for _ in range(3):
            outage.failed("broker", RuntimeError("down"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "appeals: broker unavailable, retrying in 0.2s: down"
    assert [m.split(" after")[0] for m in messages[1:]] == ["appeals: broker still unavailable"] * 2


def test_a_flapping_dependency_logs_no_more_than_a_steady_one(caplog):
    """The probe passes, the work fails again: the same outage, said once."""
    outage = Outage(log, "partitions paused")
    with caplog.at_level("WARNING", logger="tests.outage"):
        outage.failed("database", RuntimeError("read-only"))
        returns = []
        for _ in range(5):
            returns.append(outage.back())
            outage.failed("database", RuntimeError("read-only"))
    assert len(caplog.records) == 1
    assert returns[0] is not None and returns[1:] == [None] * 4  # "resumed" said once
    outage.cleared()
    assert outage.failed("database", RuntimeError("down")) == 0.2  # real work succeeded: a new outage
