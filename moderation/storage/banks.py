"""Hash banks: named lists of hashes with an action."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from moderation.domain import SIGNAL_TYPES, BankAction
from moderation.hashing.index import IndexEntry
from moderation.storage.models import Bank, BankEntry

CONFIRMED_BANK = "confirmed"


def get_or_create_bank(session: Session, name: str, action: BankAction, description: str = "") -> Bank:
    bank = session.scalar(select(Bank).where(Bank.name == name))
    if bank is None:
        bank = Bank(name=name, action=action.value, description=description)
        session.add(bank)
        session.flush()
    return bank


def add_entries(
    session: Session,
    bank: Bank,
    signals: dict[str, str],
    added_by: str,
    source_item_id: int | None = None,
    note: str = "",
) -> int:
    """Add hashes to a bank; an existing (bank, signal, value) is left as it is."""
    rows = [
        {
            "bank_id": bank.id,
            "signal": signal,
            "value": value,
            "added_by": added_by,
            "source_item_id": source_item_id,
            "note": note,
        }
        for signal, value in signals.items()
        if signal in SIGNAL_TYPES and value
    ]
    if not rows:
        return 0
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(BankEntry).values(rows).on_conflict_do_nothing(index_elements=["bank_id", "signal", "value"])
    )
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


def entries_after(session: Session, last_id: int, limit: int = 10_000) -> Iterable[IndexEntry]:
    """Bank entries with id > last_id, oldest first: the workers' change feed."""
    rows = session.execute(
        select(BankEntry.id, Bank.name, Bank.action, BankEntry.signal, BankEntry.value)
        .join(Bank, Bank.id == BankEntry.bank_id)
        .where(BankEntry.id > last_id)
        .order_by(BankEntry.id)
        .limit(limit)
    ).all()
    return [IndexEntry(r[0], r[1], BankAction(r[2]), r[3], r[4]) for r in rows]
