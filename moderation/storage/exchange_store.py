"""The database side of hash exchanges (StopNCII, NCMEC): the ``ExchangeStore``
and ``FeedbackOutbox`` protocols of moderation/exchanges/sync.py, and the
feedback owed after a decision on an upload that matched an exchange's hash.

Exchange banks are created on first sync with action ``review_high``: StopNCII
asks partners to review matches against their own policy, and NCMEC lists are
a reporting path, not a plain removal. Admins may change the action later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from moderation.domain import BankAction, EntrySpec, EntryStatus
from moderation.errors import TransientError
from moderation.exchanges.sync import Feedback
from moderation.storage import banks
from moderation.storage.models import Bank, BankEntry, ExchangeFeedback, ExchangeState, Item, utcnow

FEEDBACK_EXCHANGES = ("stopncii",)  # exchanges that take Blocked / NotBlocked feedback


class SqlExchangeStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def get_checkpoint(self, exchange: str) -> str | None:
        with self.sessions() as s:
            state = s.get(ExchangeState, exchange)
            return state.checkpoint if state else None

    def apply_batch(
        self,
        exchange: str,
        bank: str,
        upserts: Sequence[EntrySpec],
        withdrawn: Sequence[str],
        checkpoint: str,
    ) -> tuple[int, int, int]:
        try:
            with self.sessions() as s:
                counts = self._apply(s, exchange, bank, upserts, withdrawn)
                state = s.get(ExchangeState, exchange) or ExchangeState(exchange=exchange, bank=bank)
                state.bank, state.checkpoint, state.last_sync_at = bank, checkpoint, utcnow()
                state.last_result = dict(zip(("added", "updated", "withdrawn"), counts, strict=True))
                s.add(state)
                s.commit()
                return counts
        except OperationalError as exc:
            raise TransientError(f"database unavailable: {type(exc.orig).__name__}") from None

    def _apply(
        self,
        s: Session,
        exchange: str,
        bank_name: str,
        upserts: Sequence[EntrySpec],
        withdrawn: Sequence[str],
    ) -> tuple[int, int, int]:
        bank = s.scalar(select(Bank).where(Bank.name == bank_name))
        if bank is None:
            bank = banks.create_bank(
                s,
                bank_name,
                BankAction.REVIEW_HIGH.value,
                actor=exchange,
                description=f"Hashes synced from {exchange}",
                source=exchange if exchange in ("stopncii", "ncmec") else "file_import",
            )
        result = banks.add_entries(s, bank, upserts, added_by=exchange)
        updated = 0
        if result.existing_ids:
            wanted = {banks.digest(u.signal, banks.normalise_spec(u).value): u for u in upserts}
            existing = list(s.scalars(select(BankEntry).where(BankEntry.id.in_(result.existing_ids))))
            before = {e.id: (e.source_ref, e.case_id, e.note, e.status) for e in existing}
            withdrawn_again = [e for e in existing if e.status == EntryStatus.WITHDRAWN.value]
            banks.reactivate(s, bank, withdrawn_again, actor=exchange, reason="listed again")
            for entry in existing:
                spec = wanted[entry.digest]
                entry.source_ref, entry.case_id, entry.note = spec.source_ref, spec.case_id, spec.note
                if (entry.source_ref, entry.case_id, entry.note, entry.status) != before[entry.id]:
                    entry.updated_at = utcnow()
                    updated += 1
        gone = banks.entries_by_source_ref(s, bank, list(withdrawn))
        live = [e for e in gone if e.status != EntryStatus.WITHDRAWN.value]
        banks.set_status(s, bank, live, EntryStatus.WITHDRAWN, actor=exchange, reason="withdrawn at source")
        return result.added, updated, len(live)

    # -- FeedbackOutbox ------------------------------------------------------------------
    def pending_feedback(self, exchange: str, limit: int) -> list[Feedback]:
        with self.sessions() as s:
            rows = s.scalars(
                select(ExchangeFeedback)
                .where(ExchangeFeedback.exchange == exchange, ExchangeFeedback.sent_at.is_(None))
                .order_by(ExchangeFeedback.id)
                .limit(limit)
            )
            return [Feedback(r.id, r.source_ref, r.blocked) for r in rows]

    def mark_feedback_sent(self, ids: Sequence[int]) -> None:
        self._mark(ids, None)

    def mark_feedback_rejected(self, ids: Sequence[int], reason: str) -> None:
        self._mark(ids, reason[:2000] or "rejected")

    def _mark(self, ids: Sequence[int], error: str | None) -> None:
        if not ids:
            return
        with self.sessions() as s:
            s.execute(
                update(ExchangeFeedback)
                .where(ExchangeFeedback.id.in_(list(ids)))
                .values(sent_at=utcnow(), error=error)
            )
            s.commit()


def queue_feedback(session: Session, item: Item, blocked: bool) -> int:
    """Owe each exchange whose hash this item matched a Blocked (``blocked``) or
    NotBlocked report; sent later by ``moderation exchange feedback``. Runs in
    the caller's transaction. A decision that changes (an appeal) adds a new row."""
    entry_ids = [int(m["entry_id"]) for m in item.matches or [] if "entry_id" in m]
    if not entry_ids:
        return 0
    rows: Iterable[Any] = session.execute(
        select(BankEntry.id, BankEntry.source_ref, Bank.source)
        .join(Bank, Bank.id == BankEntry.bank_id)
        .where(BankEntry.id.in_(entry_ids), Bank.source.in_(FEEDBACK_EXCHANGES), BankEntry.source_ref != "")
    ).all()
    queued = 0
    for entry_id, source_ref, exchange in rows:
        exists = session.scalar(
            select(ExchangeFeedback.id).where(
                ExchangeFeedback.exchange == exchange,
                ExchangeFeedback.source_ref == source_ref,
                ExchangeFeedback.item_id == item.id,
                ExchangeFeedback.sent_at.is_(None),
            )
        )
        if exists is not None:
            session.execute(
                update(ExchangeFeedback).where(ExchangeFeedback.id == exists).values(blocked=blocked)
            )
            continue
        session.add(
            ExchangeFeedback(
                exchange=exchange, source_ref=source_ref, entry_id=entry_id, item_id=item.id, blocked=blocked
            )
        )
        queued += 1
    return queued
