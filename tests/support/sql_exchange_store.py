"""SqlExchangeStore with the test helpers of InMemoryExchangeStore, so the same
contract tests (tests/unit/test_exchange_store_contract.py) run against both."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from moderation.storage.exchange_store import SqlExchangeStore
from moderation.storage.models import Bank, BankEntry, ExchangeFeedback


class SqlStoreHarness(SqlExchangeStore):
    _fail = False

    def apply_batch(self, *args: Any, **kwargs: Any) -> tuple[int, int, int]:
        if self._fail:
            self._fail = False
            real = self._apply

            def failing(s: Any, *a: Any) -> Any:
                real(s, *a)  # the writes happen, then the transaction dies
                raise OperationalError("COMMIT", {}, Exception("injected"))

            self._apply = failing  # type: ignore[method-assign]
            try:
                return super().apply_batch(*args, **kwargs)
            finally:
                del self._apply
        return super().apply_batch(*args, **kwargs)

    def fail_next_apply(self) -> None:
        self._fail = True

    def bank(self, name: str) -> dict[tuple[str, str], Any]:
        with self.sessions() as s:
            rows = s.scalars(
                select(BankEntry).join(Bank, Bank.id == BankEntry.bank_id).where(Bank.name == name)
            )
            return {
                (e.signal, e.value): SimpleNamespace(
                    status=e.status,
                    source_ref=e.source_ref,
                    case_id=e.case_id,
                    note=e.note,
                    added_by=e.added_by,
                )
                for e in rows
            }

    def set_status(self, bank: str, signal: str, value: str, status: str) -> None:
        with self.sessions() as s:
            entry = s.scalar(
                select(BankEntry)
                .join(Bank, Bank.id == BankEntry.bank_id)
                .where(Bank.name == bank, BankEntry.signal == signal, BankEntry.value == value)
            )
            assert entry is not None
            entry.status = status
            s.commit()

    def add_feedback(self, exchange: str, source_ref: str, blocked: bool) -> int:
        with self.sessions() as s:
            row = ExchangeFeedback(
                exchange=exchange, source_ref=source_ref, entry_id=0, item_id=0, blocked=blocked
            )
            s.add(row)
            s.commit()
            return row.id

    def feedback_state(self, row_id: int) -> tuple[str, str]:
        with self.sessions() as s:
            row = s.get(ExchangeFeedback, row_id)
            assert row is not None
            if row.sent_at is None:
                return "pending", ""
            return ("rejected", row.error) if row.error else ("sent", "")
