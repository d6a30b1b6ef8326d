"""What every ExchangeStore / FeedbackOutbox must do (moderation/exchanges/sync.py).

The ``store`` fixture yields the in-memory reference implementation; a real
store joins the parametrisation with a harness offering the same test helpers
as ``InMemoryExchangeStore``: ``bank(name)`` -> {(signal, value): row with
status, source_ref, case_id, note, added_by}, ``set_status``, ``add_feedback``,
``feedback_state`` and ``fail_next_apply``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from moderation.domain import EntrySpec
from moderation.errors import TransientError
from tests.support.exchange_servers import InMemoryExchangeStore


def _pdq(i: int) -> str:
    return hashlib.sha256(f"contract-{i}".encode()).hexdigest()


def _spec(i: int, ref: str = "", note: str = "") -> EntrySpec:
    return EntrySpec(
        "pdq", _pdq(i), source_ref=ref or f"ref-{i}", case_id=f"case-{i}", note=note, added_by="x"
    )


@pytest.fixture(params=["memory", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[InMemoryExchangeStore]:
    if request.param == "memory":
        yield InMemoryExchangeStore()
        return
    from tests.support.sql_exchange_store import SqlStoreHarness

    yield SqlStoreHarness(request.getfixturevalue("sessions"))  # type: ignore[misc]


def _statuses(store: InMemoryExchangeStore, bank: str) -> dict[str, str]:
    return {value: row.status for (_, value), row in store.bank(bank).items()}


def test_apply_adds_counts_and_stores_the_checkpoint(store: InMemoryExchangeStore) -> None:
    assert store.get_checkpoint("ex") is None
    assert store.apply_batch("ex", "b", [_spec(1), _spec(2)], [], '{"n": 1}') == (2, 0, 0)
    assert store.get_checkpoint("ex") == '{"n": 1}'
    row = store.bank("b")["pdq", _pdq(1)]
    assert (row.status, row.source_ref, row.case_id, row.added_by) == ("active", "ref-1", "case-1", "x")
    # The same batch again changes nothing.
    assert store.apply_batch("ex", "b", [_spec(1), _spec(2)], [], '{"n": 2}') == (0, 0, 0)
    assert store.get_checkpoint("ex") == '{"n": 2}'


def test_changed_fields_count_as_updated(store: InMemoryExchangeStore) -> None:
    store.apply_batch("ex", "b", [_spec(1)], [], "1")
    assert store.apply_batch("ex", "b", [_spec(1, note="new note")], [], "2") == (0, 1, 0)
    assert store.bank("b")["pdq", _pdq(1)].note == "new note"


def test_withdrawals_hit_every_entry_with_the_ref_once(store: InMemoryExchangeStore) -> None:
    store.apply_batch("ex", "b", [_spec(1, "shared"), _spec(2, "shared"), _spec(3)], [], "1")
    assert store.apply_batch("ex", "b", [], ["shared", "unknown-ref"], "2") == (0, 0, 2)
    assert _statuses(store, "b") == {_pdq(1): "withdrawn", _pdq(2): "withdrawn", _pdq(3): "active"}
    assert store.apply_batch("ex", "b", [], ["shared"], "3") == (0, 0, 0)


def test_a_withdrawn_entry_listed_again_is_active(store: InMemoryExchangeStore) -> None:
    store.apply_batch("ex", "b", [_spec(1)], [], "1")
    store.apply_batch("ex", "b", [], ["ref-1"], "2")
    assert store.apply_batch("ex", "b", [_spec(1)], [], "3") == (0, 1, 0)
    assert _statuses(store, "b") == {_pdq(1): "active"}


def test_local_decisions_survive_upserts_but_not_withdrawals(store: InMemoryExchangeStore) -> None:
    store.apply_batch("ex", "b", [_spec(1), _spec(2)], [], "1")
    store.set_status("b", "pdq", _pdq(1), "disabled")
    store.set_status("b", "pdq", _pdq(2), "quarantined")
    assert store.apply_batch("ex", "b", [_spec(1), _spec(2)], [], "2") == (0, 0, 0)
    assert _statuses(store, "b") == {_pdq(1): "disabled", _pdq(2): "quarantined"}
    assert store.apply_batch("ex", "b", [], ["ref-1", "ref-2"], "3") == (0, 0, 2)
    assert _statuses(store, "b") == {_pdq(1): "withdrawn", _pdq(2): "withdrawn"}


def test_banks_and_exchanges_are_separate(store: InMemoryExchangeStore) -> None:
    store.apply_batch("ex1", "b1", [_spec(1)], [], "a")
    assert store.apply_batch("ex2", "b2", [_spec(1)], [], "b") == (1, 0, 0)
    store.apply_batch("ex1", "b1", [], ["ref-1"], "c")
    assert (_statuses(store, "b1"), _statuses(store, "b2")) == ({_pdq(1): "withdrawn"}, {_pdq(1): "active"})
    assert (store.get_checkpoint("ex1"), store.get_checkpoint("ex2")) == ("c", "b")


def test_a_failed_apply_stores_nothing(store: InMemoryExchangeStore) -> None:
    store.apply_batch("ex", "b", [_spec(1)], [], "1")
    store.fail_next_apply()
    with pytest.raises(TransientError):
        store.apply_batch("ex", "b", [_spec(2)], ["ref-1"], "2")
    assert store.get_checkpoint("ex") == "1"
    assert _statuses(store, "b") == {_pdq(1): "active"}


def test_feedback_outbox(store: InMemoryExchangeStore) -> None:
    ids = [store.add_feedback("ex", f"ref-{i}", i % 2 == 0) for i in range(4)]
    other = store.add_feedback("other", "ref-x", True)
    assert [f.id for f in store.pending_feedback("ex", 3)] == ids[:3]
    assert [(f.source_ref, f.blocked) for f in store.pending_feedback("ex", 10)][:2] == [
        ("ref-0", True),
        ("ref-1", False),
    ]
    store.mark_feedback_sent([ids[0], ids[2]])
    store.mark_feedback_rejected([ids[1]], "unknown hash")
    assert [f.id for f in store.pending_feedback("ex", 10)] == [ids[3]]
    assert store.feedback_state(ids[1]) == ("rejected", "unknown hash")
    assert [f.id for f in store.pending_feedback("other", 10)] == [other]
