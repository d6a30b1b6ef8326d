"""The change cursor: ids can commit out of order; gaps are waited for, then given up."""

from __future__ import annotations

from moderation.storage.bank_feed import ChangeCursor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_in_order_ids_advance_the_watermark():
    c = ChangeCursor()
    assert c.fresh([1, 2, 3]) == [1, 2, 3]
    assert c.watermark == 3 and c.gaps == [] and c.high == 3
    assert c.fresh([2, 3]) == []  # re-reads are not applied twice


def test_a_late_commit_below_the_watermark_is_still_applied():
    clock = Clock()
    c = ChangeCursor(gap_timeout_s=60, clock=clock)
    assert c.fresh([1, 2, 4, 5]) == [1, 2, 4, 5]
    assert c.watermark == 2 and c.gaps == [3] and c.high == 5
    clock.now = 30
    assert c.fresh([3, 6]) == [3, 6]  # the transaction holding id 3 committed late
    assert c.watermark == 6 and c.gaps == []


def test_a_rolled_back_id_is_given_up_after_the_timeout():
    clock = Clock()
    c = ChangeCursor(gap_timeout_s=60, clock=clock)
    c.fresh([1, 3])
    clock.now = 59
    c.fresh([4])
    assert c.watermark == 1 and c.gaps == [2]
    clock.now = 61
    c.fresh([])
    c.fresh([5])
    assert c.watermark == 5 and c.gaps == []


def test_ids_at_or_below_the_watermark_are_ignored():
    c = ChangeCursor(watermark=10)
    assert c.fresh([3, 10, 11]) == [11]
