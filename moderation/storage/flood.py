"""Match statistics per bank entry and flood control.

Every outcome's matches are counted per entry (``match_count``,
``last_matched_at``) and per time window (``bank_entry_hits``). An entry that
matches ``FloodPolicy.max_hits`` uploads within one window is quarantined: it
still matches, but its automatic action falls back to high-priority review
(routing.py) until an admin releases it. A poisoned or overly generic hash (a
logo, a blank frame) thus cannot remove a flood of innocent uploads.
Windows are fixed (aligned to the epoch), so a burst that straddles two windows
may reach up to twice the limit before it trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from moderation.domain import EntryStatus, Match
from moderation.storage.banks import set_status
from moderation.storage.models import Bank, BankEntry, BankEntryHits, utcnow


@dataclass(frozen=True)
class FloodPolicy:
    """Quarantine an entry that matches ``max_hits`` times within one window.
    0 turns flood control off."""

    max_hits: int = 100
    window_seconds: int = 3600


def quarantined_entries(session: Session, limit: int = 200) -> list[tuple[BankEntry, str]]:
    rows = session.execute(
        select(BankEntry, Bank.name)
        .join(Bank, Bank.id == BankEntry.bank_id)
        .where(BankEntry.status == EntryStatus.QUARANTINED.value)
        .order_by(BankEntry.updated_at.desc())
        .limit(limit)
    ).all()
    return [(e, name) for e, name in rows]


def hit_history(session: Session, entry_id: int, limit: int = 48) -> list[tuple[datetime, int]]:
    rows = session.execute(
        select(BankEntryHits.window_start, BankEntryHits.hits)
        .where(BankEntryHits.entry_id == entry_id)
        .order_by(BankEntryHits.window_start.desc())
        .limit(limit)
    ).all()
    return [(w, int(h)) for w, h in rows]


# -- match statistics and flood control -----------------------------------------------
def record_matches(
    session: Session, matches: Sequence[Match], flood: FloodPolicy, now: datetime | None = None
) -> list[int]:
    """Count one upload's matches per entry and quarantine entries over the flood
    limit. Runs in the caller's transaction (the one that stores the outcome), so a
    redelivered event is never counted twice. Returns the newly quarantined ids."""
    entry_ids = sorted({m.entry_id for m in matches})
    if not entry_ids:
        return []
    now = now or utcnow()
    # Sorted ids: concurrent workers lock the same rows in the same order (no deadlock).
    session.execute(
        update(BankEntry)
        .where(BankEntry.id.in_(entry_ids))
        .values(match_count=BankEntry.match_count + 1, last_matched_at=now)
    )
    if flood.max_hits <= 0:
        return []
    epoch = int(now.timestamp())
    window = now - timedelta(seconds=epoch % flood.window_seconds, microseconds=now.microsecond)
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    over: list[int] = []
    for entry_id in entry_ids:
        counted = (
            upsert(BankEntryHits)
            .values(entry_id=entry_id, window_start=window, hits=1)
            .on_conflict_do_update(
                index_elements=["entry_id", "window_start"], set_={"hits": BankEntryHits.hits + 1}
            )
            .returning(BankEntryHits.hits)
        )
        if int(session.scalar(counted) or 0) >= flood.max_hits:
            over.append(entry_id)
    quarantined: list[int] = []
    for entry in session.scalars(
        select(BankEntry).where(BankEntry.id.in_(over), BankEntry.status == EntryStatus.ACTIVE.value)
    ):
        bank = session.get(Bank, entry.bank_id)
        assert bank is not None
        set_status(
            session,
            bank,
            [entry],
            EntryStatus.QUARANTINED,
            actor="flood-control",
            reason=f"{flood.max_hits} or more matches within {flood.window_seconds} s",
        )
        quarantined.append(entry.id)
    return quarantined
