"""The bank change feed that keeps every worker's in-memory index current.

Each bank or entry change writes a ``bank_changes`` row (storage/banks.py). A
worker loads every matchable entry once at start, then polls for change rows
after its watermark and re-reads the changed rows' current state, so applying a
change twice is harmless.

Change ids come from one sequence, but on PostgreSQL a transaction that took a
smaller id can commit after one that took a larger id. ``ChangeCursor`` therefore
remembers ids it has not seen below the largest seen one ("gaps") and keeps
asking for them until they appear or ``gap_timeout_s`` passes (a rolled-back
transaction leaves a gap forever). It is pure and unit-tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from moderation.domain import BankConfig, EntryState, EntryStatus
from moderation.storage.banks import bank_config
from moderation.storage.models import Bank, BankChange, BankEntry, utcnow

PAGE = 10_000
GAP_SCAN = 200_000  # ids re-scanned per refresh for late commits below the newest applied id
LOAD_PAGE = 100_000  # the index takes big batches best (one merge per batch)
START_LOOKBACK = 10_000  # change ids re-read at start, for transactions still open then


@dataclass
class ChangeCursor:
    watermark: int = 0  # every id <= watermark is applied or given up
    gap_timeout_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _seen: set[int] = field(default_factory=set)  # ids > watermark already applied
    _gaps: dict[int, float] = field(default_factory=dict)  # missing id -> first noticed

    def fresh(self, ids: Iterable[int]) -> list[int]:
        """The ids not applied yet, in order; marks them applied and advances."""
        new = sorted(i for i in set(ids) if i > self.watermark and i not in self._seen)
        previous_high = self.high
        self._seen.update(new)
        for i in new:
            self._gaps.pop(i, None)  # a late commit arrived
        self._advance(previous_high)
        return new

    def copy(self) -> ChangeCursor:
        return replace(self, _seen=set(self._seen), _gaps=dict(self._gaps))

    @property
    def gaps(self) -> list[int]:
        return sorted(self._gaps)

    @property
    def high(self) -> int:
        """The largest id applied: new rows are those above it, or in a gap."""
        return max(self._seen, default=self.watermark)

    def _advance(self, previous_high: int) -> None:
        if not self._seen:
            return
        now = self.clock()
        top = max(self._seen)
        # Every id up to previous_high is already applied or a known gap: only
        # ids between it and the new top can be new gaps.
        for missing in range(max(self.watermark, previous_high) + 1, top):
            if missing not in self._seen:
                self._gaps[missing] = now
        while self.watermark < top:
            nxt = self.watermark + 1
            if nxt in self._seen:
                self._seen.discard(nxt)
            elif nxt in self._gaps and now - self._gaps[nxt] >= self.gap_timeout_s:
                del self._gaps[nxt]  # rolled back, or open far too long
            else:
                break
            self.watermark = nxt
        for gap in [g for g in self._gaps if g <= self.watermark]:
            del self._gaps[gap]


_STATE_COLUMNS = (BankEntry.id, BankEntry.bank_id, BankEntry.signal, BankEntry.value, BankEntry.status)


def _state(row: Any) -> EntryState:
    return EntryState(row[0], row[1], row[2], row[3], EntryStatus(row[4]))


def load_banks(session: Session) -> list[BankConfig]:
    return [bank_config(b) for b in session.scalars(select(Bank))]


def latest_change_id(session: Session) -> int:
    return int(session.scalar(select(func.coalesce(func.max(BankChange.id), 0))) or 0)


def matchable_entries(session: Session, page: int = LOAD_PAGE) -> Iterator[list[EntryState]]:
    """Every active or quarantined entry, in pages by id (keyset pagination)."""
    last = 0
    statuses = [s.value for s in EntryStatus if s.matches]
    while True:
        rows = session.execute(
            select(*_STATE_COLUMNS)
            .where(BankEntry.id > last, BankEntry.status.in_(statuses))
            .order_by(BankEntry.id)
            .limit(page)
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        yield [_state(r) for r in rows]


@dataclass
class ChangeBatch:
    banks_changed: bool
    entries: list[EntryState]
    cursor: ChangeCursor  # the cursor once this batch is applied
    more: bool = False  # a full page: ask again


def changes_after(session: Session, cursor: ChangeCursor, limit: int = PAGE) -> ChangeBatch:
    """New change rows after the cursor, and any that committed late into a gap,
    with their entries' current state. ``cursor`` itself is not changed: the
    caller adopts ``batch.cursor`` only once the batch is applied, so a failure
    in between loses nothing."""
    after = cursor.copy()
    rows = list(
        session.execute(
            select(BankChange.id, BankChange.entry_id)
            .where(BankChange.id > after.high)
            .order_by(BankChange.id)
            .limit(limit)
        ).all()
    )
    more = len(rows) >= limit
    if after.gaps:
        # Every late commit below the newest applied id: one range scan of the
        # ids between the watermark and it (already applied ones are skipped).
        rows += session.execute(
            select(BankChange.id, BankChange.entry_id)
            .where(BankChange.id > after.watermark, BankChange.id < after.high)
            .order_by(BankChange.id)
            .limit(GAP_SCAN)
        ).all()
    fresh = set(after.fresh(r[0] for r in rows))
    entry_ids = sorted({r[1] for r in rows if r[0] in fresh and r[1] is not None})
    banks_changed = any(r[1] is None for r in rows if r[0] in fresh)
    entries: list[EntryState] = []
    for start in range(0, len(entry_ids), 1000):
        chunk = entry_ids[start : start + 1000]
        entries += [
            _state(r) for r in session.execute(select(*_STATE_COLUMNS).where(BankEntry.id.in_(chunk)))
        ]
    return ChangeBatch(banks_changed, entries, after, more=more)


def start_cursor(session: Session, gap_timeout_s: float = 300.0) -> ChangeCursor:
    """A cursor for a worker that loads the full state now. It re-reads the last
    START_LOOKBACK change ids and every change of the last ``gap_timeout_s``, so
    a transaction still open at load time (a large import) is not missed."""
    recent = utcnow() - timedelta(seconds=gap_timeout_s)
    older = session.scalar(select(func.max(BankChange.id)).where(BankChange.created_at < recent)) or 0
    watermark = min(int(older), latest_change_id(session) - START_LOOKBACK)
    return ChangeCursor(watermark=max(0, watermark), gap_timeout_s=gap_timeout_s)


class IndexTarget(Protocol):
    def set_banks(self, banks: Iterable[BankConfig]) -> None: ...
    def apply(self, entries: Iterable[EntryState]) -> int: ...
    def __len__(self) -> int: ...


class IndexFeeder:
    """Loads a bank index from the database and keeps it current.

    ``refresh`` is cheap when nothing changed (one indexed query); callers run it
    every ``BANK_REFRESH_SECONDS``. Database errors propagate to the caller's
    retry loop; the index is left as it was, and the next refresh resumes."""

    def __init__(
        self, sessions: sessionmaker[Session], index: IndexTarget, gap_timeout_s: float = 300.0
    ) -> None:
        self.sessions = sessions
        self.index = index
        self.gap_timeout_s = gap_timeout_s
        self.cursor: ChangeCursor | None = None

    def load(self, progress: Callable[[int], None] | None = None) -> int:
        with self.sessions() as session:
            cursor = start_cursor(session, self.gap_timeout_s)
            self.index.set_banks(load_banks(session))
            total = 0
            for page in matchable_entries(session):
                total += self.index.apply(page)
                if progress is not None:
                    progress(total)
        self.cursor = cursor
        return total

    def refresh(self) -> int:
        if self.cursor is None:
            return self.load()
        applied = 0
        with self.sessions() as session:
            while True:
                batch = changes_after(session, self.cursor)
                if batch.banks_changed:
                    self.index.set_banks(load_banks(session))
                applied += self.index.apply(batch.entries)
                self.cursor = batch.cursor
                if not batch.more:
                    break
        return applied
