"""Banks on PostgreSQL: entries, lifecycle, flood control, and the change feed
that brings every change into a worker's index without a rebuild."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from moderation.domain import BankAction, EntrySpec, EntryStatus, HashSet, Match
from moderation.errors import Conflict, NotFound, RequestError
from moderation.hashing.index import BankIndex
from moderation.storage import banks, flood
from moderation.storage.bank_feed import IndexFeeder
from moderation.storage.models import AuditRecord

PDQ_A = "a" * 64
PDQ_B = "5" * 64


def hashes(pdq: str = PDQ_A, sha: str = "0" * 64) -> HashSet:
    return HashSet(sha, "0" * 32, pdq, 100)


def test_entries_are_validated_deduplicated_and_searchable(sessions):
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        result = banks.add_entries(
            s,
            bank,
            [
                EntrySpec("pdq", PDQ_A.upper(), case_id="case-1"),
                EntrySpec("sha256", "b" * 64, source_ref="sx"),
            ],
            added_by="t",
        )
        assert (result.added, result.existing) == (2, 0)
        again = banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A)], added_by="t")
        assert (again.added, again.existing) == (0, 1)
        with pytest.raises(RequestError, match="pdq value must be 64 hex"):
            banks.add_entries(s, bank, [EntrySpec("pdq", "xyz")], added_by="t")
        with pytest.raises(RequestError, match="unknown signal"):
            banks.add_entries(s, bank, [EntrySpec("phash", "ab")], added_by="t")
        with pytest.raises(Conflict):
            banks.create_bank(s, "victims", "review", actor="t")
        with pytest.raises(RequestError):
            banks.create_bank(s, "Bad Name", "review", actor="t")
        with pytest.raises(NotFound):
            banks.get_bank(s, "nope")
        assert [e.value for e in banks.search_entries(s, bank, query="aaaa")] == [PDQ_A]
        assert [e.signal for e in banks.search_entries(s, bank, query="case-1")] == ["pdq"]
        assert [e.signal for e in banks.search_entries(s, bank, query="sx")] == ["sha256"]
        assert len(banks.search_entries(s, bank)) == 2
        s.commit()


def test_withdrawal_is_recorded_and_final(sessions):
    with sessions() as s:
        bank = banks.create_bank(s, "stop", "auto_remove", actor="t")
        banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A, case_id="c9")], added_by="t")
        entries = banks.entries_by_case(s, bank, "c9")
        assert (
            banks.set_status(s, bank, entries, EntryStatus.WITHDRAWN, actor="helpline", reason="victim") == 1
        )
        entry = entries[0]
        assert entry.status == "withdrawn" and entry.withdrawn_at is not None
        assert entry.status_changed_by == "helpline" and entry.value == PDQ_A  # kept, not deleted
        with pytest.raises(Conflict):
            banks.set_status(s, bank, entries, EntryStatus.ACTIVE, actor="x")
        actions = [a.action for a in s.scalars(select(AuditRecord).order_by(AuditRecord.id))]
        assert "bank.entry.withdrawn" in actions
        s.commit()


def test_flood_control_quarantines_an_entry_that_matches_too_often(sessions):
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        entry_id = banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A)], added_by="t").ids[0]
        match = Match("victims", BankAction.AUTO_REMOVE, entry_id, "pdq", 3)
        policy = flood.FloodPolicy(max_hits=3, window_seconds=3600)
        now = datetime(2026, 11, 28, 10, 5, tzinfo=UTC)
        assert flood.record_matches(s, [match], policy, now) == []
        assert flood.record_matches(s, [match], policy, now) == []
        assert flood.record_matches(s, [match], policy, now) == [entry_id]
        assert flood.record_matches(s, [match], policy, now) == []  # already quarantined
        entry = banks.get_entry(s, bank, entry_id)
        assert entry.status == "quarantined" and entry.match_count == 4
        assert entry.status_changed_by == "flood-control"
        assert [e.id for e, name in flood.quarantined_entries(s)] == [entry_id]
        assert flood.hit_history(s, entry_id)[0][1] == 4
        s.commit()


def test_the_feed_brings_every_change_into_the_index(sessions):
    index = BankIndex()
    feeder = IndexFeeder(sessions, index)
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A)], added_by="t")
        s.commit()
    assert feeder.load() == 1
    assert [m.bank for m in index.match(hashes())] == ["victims"]

    with sessions() as s:  # a new entry, in another bank
        watch = banks.create_bank(s, "watch", "review", actor="t")
        banks.add_entries(s, watch, [EntrySpec("sha256", "c" * 64)], added_by="t")
        s.commit()
    feeder.refresh()
    assert [m.bank for m in index.match(hashes(PDQ_B, "c" * 64))] == ["watch"]

    with sessions() as s:  # withdrawn: stops matching
        bank = banks.get_bank(s, "victims")
        banks.set_status(s, bank, banks.search_entries(s, bank), EntryStatus.WITHDRAWN, actor="t")
        s.commit()
    feeder.refresh()
    assert index.match(hashes()) == []

    with sessions() as s:  # a disabled bank stops matching, re-enabled matches again
        banks.update_bank(s, banks.get_bank(s, "watch"), actor="t", enabled=False)
        s.commit()
    feeder.refresh()
    assert index.match(hashes(PDQ_B, "c" * 64)) == []
    with sessions() as s:
        banks.update_bank(s, banks.get_bank(s, "watch"), actor="t", enabled=True, action="review_high")
        s.commit()
    feeder.refresh()
    assert [m.bank_action for m in index.match(hashes(PDQ_B, "c" * 64))] == [BankAction.REVIEW_HIGH]


def test_export_lists_entries_with_metadata(sessions):
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        banks.add_entries(
            s,
            bank,
            [EntrySpec("pdq", PDQ_A, case_id="c1", note="n"), EntrySpec("md5", "d" * 32)],
            added_by="t",
        )
        rows = list(banks.export_records(s, bank, None))
        assert [(r["signal"], r["case_id"], r["status"]) for r in rows] == [
            ("pdq", "c1", "active"),
            ("md5", "", "active"),
        ]
        assert banks.bank_stats(s, bank)["active"] == 2


def test_a_new_submission_revives_a_withdrawn_hash_and_reports_existing_ids(sessions):
    with sessions() as s:
        bank = banks.create_bank(s, "helpline", "auto_remove", actor="t")
        first = banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A, case_id="old")], added_by="t")
        banks.set_status(s, bank, banks.entries_by_case(s, bank, "old"), EntryStatus.WITHDRAWN, actor="t")
        plain = banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A, case_id="new")], added_by="t")
        assert (plain.added, plain.existing, plain.revived, plain.existing_ids) == (0, 1, 0, first.ids)
        assert banks.get_entry(s, bank, first.ids[0]).status == "withdrawn"
        again = banks.add_entries(
            s, bank, [EntrySpec("pdq", PDQ_A, case_id="new")], added_by="hl", revive=True
        )
        assert again.revived == 1
        entry = banks.get_entry(s, bank, first.ids[0])
        assert (entry.status, entry.case_id, entry.withdrawn_at) == ("active", "new", None)
        with pytest.raises(RequestError, match="reserved"):
            banks.create_bank(s, "quarantined", "review", actor="t")


def test_flood_control_and_the_feed_work_on_the_embedded_sqlite_default(sqlite_url):
    from moderation.storage.db import make_engine, make_sessionmaker

    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    index = BankIndex()
    feeder = IndexFeeder(sessions, index)
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        entry_id = banks.add_entries(s, bank, [EntrySpec("pdq", PDQ_A)], added_by="t").ids[0]
        s.commit()
    feeder.load()
    match = index.match(hashes())[0]
    with sessions() as s:
        policy = flood.FloodPolicy(max_hits=2, window_seconds=3600)
        assert flood.record_matches(s, [match], policy) == []
        assert flood.record_matches(s, [match], policy) == [entry_id]
        s.commit()
    feeder.refresh()
    assert index.match(hashes())[0].quarantined
    engine.dispose()


def test_changes_that_commit_late_or_fail_to_apply_are_never_lost(sqlite_url):
    """Ids that commit out of order (a long import finishing after a newer
    change) are applied when they appear, however many; a refresh that fails
    half-way is retried from where it was."""
    from sqlalchemy import text

    from moderation.storage.db import make_engine, make_sessionmaker
    from moderation.storage.models import BankChange

    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")  # change id 1
        ids = banks.add_entries(
            s, bank, [EntrySpec("pdq", f"{i:064x}") for i in range(1, 1502)], added_by="t"
        ).ids
        s.execute(text("DELETE FROM bank_changes WHERE entry_id IS NOT NULL"))
        s.commit()
    index = BankIndex()
    feeder = IndexFeeder(sessions, index)
    feeder.load()
    with sessions() as s:  # the newest change commits first; 1,500 older ones later
        s.add(BankChange(id=2000, bank_id=bank.id, entry_id=ids[-1]))
        s.commit()
    feeder.refresh()
    with sessions() as s:
        banks.set_status(s, bank, [banks.get_entry(s, bank, i) for i in ids], EntryStatus.DISABLED, actor="t")
        s.execute(text("DELETE FROM bank_changes WHERE id > 2000"))
        for n, entry_id in enumerate(ids[:-1]):
            s.add(BankChange(id=300 + n, bank_id=bank.id, entry_id=entry_id))
        s.commit()
    feeder.refresh()
    assert len(index) == 1  # every late disable applied, only the newest entry's change is pending

    with sessions() as s:
        s.add(BankChange(id=2001, bank_id=bank.id, entry_id=ids[-1]))
        s.commit()
    real_apply = index.apply
    index.apply = lambda entries: (_ for _ in ()).throw(RuntimeError("injected"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        feeder.refresh()
    index.apply = real_apply  # type: ignore[method-assign]
    feeder.refresh()
    assert len(index) == 0
    engine.dispose()


def test_reimports_do_not_use_up_entry_ids_and_repeats_count_as_existing(sessions):
    with sessions() as s:
        bank = banks.create_bank(s, "victims", "auto_remove", actor="t")
        specs = [EntrySpec("md5", f"{i:032x}") for i in range(100)]
        first = banks.add_entries(s, bank, specs, added_by="t")
        for _ in range(3):
            again = banks.add_entries(s, bank, specs, added_by="t")
            assert (again.added, again.existing) == (0, 100)
        new = banks.add_entries(
            s, bank, [EntrySpec("pdq", PDQ_A), EntrySpec("pdq", PDQ_A.upper())], added_by="t"
        )
        assert (new.added, new.existing) == (1, 1)
        assert new.ids == [max(first.ids) + 1]  # no ids burnt by the re-imports
        s.commit()
