"""The figures the web role exports from the database at scrape time: open
queue items, items near or past their SLA, the outboxes' backlog and set-aside
rows, and bank sizes.

Each is one grouped query over an indexed column; with a bank of millions of
entries the per-bank count is the costliest (an index-only scan of
``ix_bank_entries_bank_status``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from moderation.domain import EntryStatus, ItemState
from moderation.metrics import DatabaseGauges
from moderation.storage.models import Bank, BankEntry, DeadLetter, Decision, Item, utcnow
from moderation.storage.queue import queue_depth
from moderation.storage.set_aside import counts as set_aside_counts

OPEN = (ItemState.PENDING.value, ItemState.CLAIMED.value)


def database_gauges(session: Session, near_hours: float, now: datetime | None = None) -> DatabaseGauges:
    now = now or utcnow()
    return DatabaseGauges(
        queue=queue_depth(session, now),
        sla=sla_items(session, now, near_hours),
        outbox=outbox_backlog(session, now),
        set_aside=set_aside_counts(session),
        banks=bank_sizes(session),
    )


def sla_items(session: Session, now: datetime, near_hours: float) -> list[tuple[str, str, int]]:
    """(tier, "near" | "breached", count) of open items due within ``near_hours``."""
    breached = (Item.due_at < now).label("breached")
    rows = session.execute(
        select(Item.tier, breached, func.count())
        .where(Item.state.in_(OPEN), Item.due_at < now + timedelta(hours=near_hours))
        .group_by(Item.tier, breached)
    ).all()
    return [(tier, "breached" if late else "near", int(count)) for tier, late, count in rows]


def outbox_backlog(session: Session, now: datetime) -> list[tuple[str, int, float]]:
    """(outbox, rows waiting to be produced, age in seconds of the oldest) for
    decisions and dead letters. Set-aside and discarded rows are not waiting
    (``set_aside_counts``); decisions held behind a set-aside one are."""
    out = []
    for name, table in (("decisions", Decision), ("dead_letters", DeadLetter)):
        count, oldest = session.execute(
            select(func.count(), func.min(table.created_at)).where(
                table.published_at.is_(None), table.set_aside_at.is_(None), table.discarded_at.is_(None)
            )
        ).one()
        age = max(0.0, (now - _aware(oldest)).total_seconds()) if oldest is not None else 0.0
        out.append((name, int(count), age))
    return out


def bank_sizes(session: Session) -> list[tuple[str, str, int]]:
    """(bank, action, matchable entries) for every enabled bank."""
    matchable = [s.value for s in EntryStatus if s.matches]
    rows = session.execute(
        select(Bank.name, Bank.action, func.count(BankEntry.id))
        .outerjoin(BankEntry, (BankEntry.bank_id == Bank.id) & BankEntry.status.in_(matchable))
        .where(Bank.enabled.is_(True))
        .group_by(Bank.name, Bank.action)
    ).all()
    return [(name, action, int(count)) for name, action, count in rows]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
