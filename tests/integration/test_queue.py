"""Claiming on real PostgreSQL (row locks, SKIP LOCKED) and on the SQLite default."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from moderation.storage import queue, users
from moderation.storage.db import make_engine, make_sessionmaker
from moderation.storage.models import Item, User, utcnow
from tests.support.factories import make_item


@pytest.fixture(params=["postgresql", "sqlite"])
def qsessions(request, tmp_path):
    if request.param == "postgresql":
        url = request.getfixturevalue("db_url")
    else:
        url = request.getfixturevalue("sqlite_url")
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _items(sessions, specs):
    """specs: (priority, tier, age_seconds)"""
    now = utcnow()
    with sessions() as s:
        for n, (priority, tier, age) in enumerate(specs):
            s.add(make_item(n, priority=priority, tier=tier, created_at=now - timedelta(seconds=age)))
        s.commit()


def _users(sessions, *specs):
    with sessions() as s:
        made = [users.create_user(s, name, "a long enough password", role) for name, role in specs]
        s.commit()
        return [u.id for u in made]


def _claim(sessions, user_id, lease=60, now=None):
    with sessions() as s:
        user = s.get(User, user_id)
        item = queue.claim_next_item(s, user, lease, now=now)
        s.commit()
        return None if item is None else item.id


def test_highest_priority_then_oldest_first(qsessions):
    _items(
        qsessions, [(10, "moderator", 50), (80, "moderator", 5), (80, "moderator", 30), (40, "moderator", 99)]
    )
    a, b, c, d = _users(
        qsessions, ("a", "moderator"), ("b", "moderator"), ("c", "moderator"), ("d", "moderator")
    )
    order = [_claim(qsessions, u) for u in (a, b, c, d)]
    with qsessions() as s:
        got = [s.get(Item, i).event_id for i in order]
    assert got == ["e2", "e1", "e3", "e0"]
    assert _claim(qsessions, _users(qsessions, ("e", "moderator"))[0]) is None


def test_a_live_claim_is_returned_instead_of_a_second_item(qsessions):
    _items(qsessions, [(50, "moderator", 1), (40, "moderator", 1)])
    (u,) = _users(qsessions, ("a", "moderator"))
    first = _claim(qsessions, u)
    assert _claim(qsessions, u) == first


def test_expired_leases_return_items_to_the_queue(qsessions):
    _items(qsessions, [(50, "moderator", 1)])
    a, b = _users(qsessions, ("a", "moderator"), ("b", "moderator"))
    item = _claim(qsessions, a, lease=30)
    assert _claim(qsessions, b) is None
    later = utcnow() + timedelta(seconds=31)
    assert _claim(qsessions, b, now=later) == item
    with qsessions() as s:
        assert not queue.holds_live_claim(s.get(Item, item), s.get(User, a), now=later)


def test_escalated_items_are_for_admins_only(qsessions):
    _items(qsessions, [(10, "senior", 1), (90, "moderator", 1)])
    mod, admin = _users(qsessions, ("m", "moderator"), ("boss", "admin"))
    with qsessions() as s:
        escalated = s.scalar(select(Item.id).where(Item.tier == "senior"))
    assert _claim(qsessions, admin) == escalated  # escalations first for admins
    assert _claim(qsessions, mod) != escalated


def test_concurrent_claimers_never_get_the_same_item(qsessions):
    n_items, n_claimers = 60, 12
    _items(qsessions, [(i % 7, "moderator", i) for i in range(n_items)])
    ids = _users(qsessions, *[(f"u{i}", "moderator") for i in range(n_claimers)])
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(user_id: int) -> None:
        try:
            while True:
                with qsessions() as s:
                    user = s.get(User, user_id)
                    item = queue.claim_next_item(s, user, 60)
                    if item is None:
                        return
                    item.state = "decided"  # decide at once so the next claim takes a new item
                    item_id = item.id
                    s.commit()
                with lock:
                    claimed.append(item_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(u,)) for u in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(claimed) == n_items
    assert len(set(claimed)) == n_items  # zero double claims


def test_one_user_clicking_next_twice_at_once_gets_one_item(qsessions):
    _items(qsessions, [(50, "moderator", i) for i in range(6)])
    (u,) = _users(qsessions, ("a", "moderator"))
    results: list[int | None] = []
    barrier = threading.Barrier(4)

    def click() -> None:
        barrier.wait()
        results.append(_claim(qsessions, u))

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and len(set(results)) == 1 and results[0] is not None
    with qsessions() as s:
        assert len(s.scalars(select(Item.id).where(Item.claimed_by == u)).all()) == 1


def test_queue_depth_counts_expired_claims_as_pending(qsessions):
    _items(qsessions, [(50, "moderator", 1), (20, "moderator", 1)])
    (u,) = _users(qsessions, ("a", "moderator"))
    _claim(qsessions, u, lease=30)
    with qsessions() as s:
        now_depth = {(st, p): n for st, _t, p, n in queue.queue_depth(s)}
        later = {(st, p): n for st, _t, p, n in queue.queue_depth(s, now=utcnow() + timedelta(seconds=60))}
    assert now_depth == {("claimed", 50): 1, ("pending", 20): 1}
    assert later == {("pending", 50): 1, ("pending", 20): 1}
