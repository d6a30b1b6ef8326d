"""Reading the audit log: filters, keyset pages and a streamed export.

Every filter reads an indexed column (``actor``, ``action``, ``item_id``,
``at``); pages are keyset pages on the id (newest first, ``before_id``), so the
thousandth page costs what the first does. ``stream`` reads in batches through
a server-side cursor on PostgreSQL, so an export of millions of rows never
holds them all in memory. There is no search inside ``details`` (JSON): it
would scan the whole log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, func, or_, select
from sqlalchemy.orm import Session

from moderation.storage.models import AuditRecord

STREAM_BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    """What to show. ``action`` is hierarchical: ``login`` (or ``login.``)
    matches ``login`` and every ``login.*`` action; ``until`` is exclusive."""

    actor: str = ""
    action: str = ""
    item_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None

    def query(self) -> Select[AuditRecord]:
        stmt = select(AuditRecord)
        if self.actor:
            stmt = stmt.where(AuditRecord.actor == self.actor)
        action = self.action.rstrip(".*")
        if action:
            stmt = stmt.where(
                or_(
                    AuditRecord.action == action, AuditRecord.action.startswith(action + ".", autoescape=True)
                )
            )
        if self.item_id is not None:
            stmt = stmt.where(AuditRecord.item_id == self.item_id)
        if self.since is not None:
            stmt = stmt.where(AuditRecord.at >= self.since)
        if self.until is not None:
            stmt = stmt.where(AuditRecord.at < self.until)
        if self.before_id is not None:
            stmt = stmt.where(AuditRecord.id < self.before_id)
        return stmt.order_by(AuditRecord.id.desc())

    def as_details(self) -> dict[str, Any]:
        """The filters as an audit record's details (the export is audited)."""
        values = {
            "actor": self.actor,
            "action": self.action,
            "item_id": self.item_id,
            "from": self.since.isoformat() if self.since else None,
            "to": self.until.isoformat() if self.until else None,
            "before_id": self.before_id,
        }
        return {k: v for k, v in values.items() if v not in (None, "")}


def page(session: Session, where: AuditFilter, size: int) -> tuple[list[AuditRecord], int | None]:
    """Up to ``size`` records, newest first, and the ``before_id`` of the next page (None: last page)."""
    rows = list(session.scalars(where.query().limit(size + 1)))
    more = len(rows) > size
    rows = rows[:size]
    return rows, (rows[-1].id if more and rows else None)


def latest_id(session: Session) -> int:
    return int(session.scalar(select(func.max(AuditRecord.id))) or 0)


def stream(session: Session, where: AuditFilter) -> Iterator[Row[Any]]:
    """Every matching record (id, at, actor, action, item_id, details), newest
    first, read ``STREAM_BATCH`` at a time; plain rows, not ORM objects, so an
    export runs at database speed."""
    columns = (
        AuditRecord.id,
        AuditRecord.at,
        AuditRecord.actor,
        AuditRecord.action,
        AuditRecord.item_id,
        AuditRecord.details,
    )
    stmt = where.query().with_only_columns(*columns).execution_options(yield_per=STREAM_BATCH)
    result = session.execute(stmt)
    try:
        yield from result
    finally:
        result.close()


def detail_pairs(details: dict[str, Any] | None, limit: int = 500) -> list[tuple[str, str]]:
    """``details`` as (key, value) text pairs, keys sorted; values that are not
    text are written as JSON, and long values are cut to ``limit`` characters."""
    pairs = []
    for key in sorted(details or {}):
        value = details[key]  # type: ignore[index]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
        pairs.append((str(key), text if len(text) <= limit else text[:limit] + "…"))
    return pairs
