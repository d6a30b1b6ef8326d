"""The ``confirmed`` bank is created by the first confirmed removal, once, even
when several moderators' first removals on a fresh database arrive together
(they used to race: two of 1,072 decisions answered 500, a UniqueViolation on
``banks_name_key``)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select

from moderation.domain import BankAction
from moderation.storage import banks
from moderation.storage.db import make_engine, make_sessionmaker
from moderation.storage.models import AuditRecord, Bank, BankEntry
from tests.support.reviewers import Reviewer, World, add_item, add_users

MODERATORS = [f"mod{i}" for i in range(8)]


def _together(calls: list[Any]) -> list[Any]:
    """Run ``calls`` in threads released at the same moment; their results."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_first_removals_create_the_confirmed_bank_once(db_url, sessions):
    world = World(db_url, sessions)
    add_users(sessions, **dict.fromkeys(MODERATORS, "moderator"))
    for n in range(1, len(MODERATORS) + 1):
        add_item(sessions, n=n, pdq=f"{n:064x}")
    moderators = [Reviewer(world.app, sessions, name) for name in MODERATORS]
    claimed = [(m, m.claim()) for m in moderators]
    assert all(item_id is not None for _m, item_id in claimed)

    answers = _together([lambda m=m, i=i: m.decide(i, "remove", "ncii") for m, i in claimed])

    statuses = [a.status_code if hasattr(a, "status_code") else repr(a)[:200] for a in answers]
    assert statuses == [201] * len(MODERATORS), statuses
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Bank).where(Bank.name == banks.CONFIRMED_BANK)) == 1
        created = s.scalars(select(AuditRecord).where(AuditRecord.action == "bank.create")).all()
        assert [r.details["bank"] for r in created] == [banks.CONFIRMED_BANK]
    assert len({e.source_item_id for e in world.confirmed_entries()}) == len(MODERATORS)


def test_get_or_create_is_race_free_on_the_embedded_sqlite_default(sqlite_url):
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)

    def first_removal() -> int:
        with sessions() as s:
            bank = banks.get_or_create_bank(s, banks.CONFIRMED_BANK, BankAction.AUTO_REMOVE, "confirmed")
            s.commit()
            return bank.id

    try:
        ids = _together([first_removal] * 6)
        assert len(set(ids)) == 1 and isinstance(ids[0], int), ids
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Bank)) == 1
            assert s.scalar(select(func.count()).select_from(BankEntry)) == 0
    finally:
        engine.dispose()
