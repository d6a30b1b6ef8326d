"""Hash banks: named lists of hashes with an action, thresholds and a lifecycle
per entry. Every change writes a ``bank_changes`` row in the same transaction,
which is how workers learn about it (see ``storage/bank_feed.py``).

Entries are never deleted: withdrawn or disabled entries stop matching but keep
their metadata, and each status change is also written to the audit log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, insert, or_, select, text
from sqlalchemy.orm import Session

from moderation.domain import BankAction, BankConfig, BankSource, EntrySpec, EntryStatus
from moderation.errors import Conflict, NotFound, RequestError
from moderation.hashing import signals
from moderation.storage import audit
from moderation.storage.bulk_insert import insert_entries
from moderation.storage.models import Bank, BankChange, BankEntry, utcnow

CONFIRMED_BANK = "confirmed"
RESERVED_BANK_NAMES = frozenset({"quarantined"})  # /api/v1/banks/quarantined
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass
class AddResult:
    added: int = 0
    existing: int = 0
    ids: list[int] = field(default_factory=list)  # new entries
    existing_ids: list[int] = field(default_factory=list)  # hashes the bank already held
    revived: int = 0  # withdrawn entries made active again by this submission


def record_change(session: Session, bank_id: int, entry_ids: Sequence[int | None] = (None,)) -> None:
    if session.get_bind().dialect.name == "postgresql" and len(entry_ids) > 1:
        # One statement for any number of entries (bulk imports).
        session.execute(
            text(
                "INSERT INTO bank_changes (bank_id, entry_id, created_at) "
                "SELECT :bank_id, unnest(CAST(:ids AS bigint[])), :now"
            ),
            {"bank_id": bank_id, "ids": list(entry_ids), "now": utcnow()},
        )
        return
    session.execute(
        insert(BankChange),
        [{"bank_id": bank_id, "entry_id": e, "created_at": utcnow()} for e in entry_ids],
    )


def bank_config(bank: Bank) -> BankConfig:
    return BankConfig(
        bank.id, bank.name, BankAction(bank.action), bank.pdq_distance, bank.vpdq_share, bank.enabled
    )


# -- banks ---------------------------------------------------------------------------
def validate_bank_fields(
    action: str | None = None, pdq_distance: int | None = None, vpdq_share: float | None = None
) -> None:
    if action is not None and action not in {a.value for a in BankAction}:
        raise RequestError(
            f"unknown action {action!r}: expected one of {', '.join(a.value for a in BankAction)}"
        )
    if pdq_distance is not None and not (isinstance(pdq_distance, int) and 0 <= pdq_distance <= 31):
        raise RequestError(f"pdq_distance must be an integer 0..31, got {pdq_distance!r}")
    if vpdq_share is not None and not (isinstance(vpdq_share, int | float) and 0 < vpdq_share <= 1):
        raise RequestError(f"vpdq_share must be a number in (0, 1], got {vpdq_share!r}")


def get_bank(session: Session, name: str) -> Bank:
    bank = session.scalar(select(Bank).where(Bank.name == name))
    if bank is None:
        raise NotFound(f"no bank named {name!r}")
    return bank


def list_banks(session: Session) -> list[Bank]:
    return list(session.scalars(select(Bank).order_by(Bank.name)))


def create_bank(
    session: Session,
    name: str,
    action: str,
    *,
    actor: str,
    description: str = "",
    pdq_distance: int = 31,
    vpdq_share: float = 0.8,
    source: str = BankSource.LOCAL.value,
) -> Bank:
    if name in RESERVED_BANK_NAMES:
        raise RequestError(f"bank name {name!r} is reserved")
    if not name or len(name) > 100 or not set(name) <= _NAME_CHARS:
        raise RequestError(f"bank name {name!r}: use 1-100 of a-z, 0-9, '-', '_', '.'")
    validate_bank_fields(action, pdq_distance, vpdq_share)
    if source not in {s.value for s in BankSource}:
        raise RequestError(f"unknown source {source!r}")
    if session.scalar(select(Bank.id).where(Bank.name == name)) is not None:
        raise Conflict(f"bank {name!r} already exists")
    bank = Bank(
        name=name,
        action=action,
        description=description,
        pdq_distance=pdq_distance,
        vpdq_share=vpdq_share,
        source=source,
        enabled=True,
        updated_at=utcnow(),
    )
    session.add(bank)
    session.flush()
    record_change(session, bank.id)
    audit.record(session, actor, "bank.create", None, bank=name, bank_action=action, source=source)
    return bank


def get_or_create_bank(session: Session, name: str, action: BankAction, description: str = "") -> Bank:
    """The bank named ``name``, created (by "system") if missing. Race-free:
    concurrent first callers (two moderators' first removals on a fresh
    database) insert with ON CONFLICT DO NOTHING, so exactly one creates it,
    records the change and the audit entry, and the others wait for its
    transaction and read its row (PostgreSQL and SQLite)."""
    bank = session.scalar(select(Bank).where(Bank.name == name))
    if bank is not None:
        return bank
    dialect = session.get_bind().dialect.name
    if dialect not in {"postgresql", "sqlite"}:
        return create_bank(session, name, action.value, actor="system", description=description)
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    now = utcnow()
    values = dict(
        name=name,
        action=action.value,
        description=description,
        pdq_distance=31,
        vpdq_share=0.8,
        source=BankSource.LOCAL.value,
        enabled=True,
        created_at=now,
        updated_at=now,
    )
    statement = (pg_insert if dialect == "postgresql" else sqlite_insert)(Bank).values(**values)
    bank_id = session.scalar(statement.on_conflict_do_nothing(index_elements=["name"]).returning(Bank.id))
    if bank_id is not None:
        record_change(session, bank_id)
        audit.record(
            session, "system", "bank.create", None, bank=name, bank_action=action.value, source="local"
        )
    bank = session.scalar(select(Bank).where(Bank.name == name))
    assert bank is not None  # inserted here, or committed by the transaction it waited for
    return bank


UPDATABLE_BANK_FIELDS = ("action", "description", "pdq_distance", "vpdq_share", "enabled")


def update_bank(session: Session, bank: Bank, *, actor: str, **changes: object) -> Bank:
    unknown = set(changes) - set(UPDATABLE_BANK_FIELDS)
    if unknown:
        raise RequestError(f"cannot change {', '.join(sorted(unknown))} of a bank")
    validate_bank_fields(
        changes.get("action"),  # type: ignore[arg-type]
        changes.get("pdq_distance"),  # type: ignore[arg-type]
        changes.get("vpdq_share"),  # type: ignore[arg-type]
    )
    if "enabled" in changes and not isinstance(changes["enabled"], bool):
        raise RequestError("enabled must be true or false")
    for key, value in changes.items():
        setattr(bank, key, value)
    bank.updated_at = utcnow()
    record_change(session, bank.id)
    audit.record(session, actor, "bank.update", None, bank=bank.name, changes=changes)
    return bank


# -- entries -------------------------------------------------------------------------
def normalise_spec(spec: EntrySpec) -> EntrySpec:
    """``spec`` in its stored form; RequestError saying what is wrong otherwise."""
    try:
        return signals.make_entry(
            spec.signal,
            spec.value,
            source_ref=spec.source_ref,
            case_id=spec.case_id,
            note=spec.note,
            added_by=spec.added_by,
        )
    except ValueError as exc:
        raise RequestError(str(exc)) from None


def digest(signal: str, value: str) -> str:
    return hashlib.sha256(f"{signal}:{value}".encode()).hexdigest()


def add_entries(
    session: Session,
    bank: Bank,
    specs: Iterable[EntrySpec],
    *,
    added_by: str,
    source_item_id: int | None = None,
    revive: bool = False,
) -> AddResult:
    """Add hashes to a bank. A hash already in the bank is left as it is (counted
    in ``existing``), so imports and redelivered submissions are idempotent; with
    ``revive`` (a new submission by a helpline or an exchange) a withdrawn one
    becomes active again under the new case; a disabled one stays disabled (an
    admin's decision). Raises RequestError on the first invalid value, before
    writing anything."""
    rows = []
    now = utcnow()
    digests: set[str] = set()
    repeated = 0
    for spec in specs:
        spec = normalise_spec(spec)
        key = digest(spec.signal, spec.value)
        if key in digests:  # the same hash twice in one request (e.g. upper and lower case)
            repeated += 1
            continue
        digests.add(key)
        rows.append(
            {
                "bank_id": bank.id,
                "signal": spec.signal,
                "value": spec.value,
                "digest": key,
                "value_prefix": spec.value[:64],
                "status": EntryStatus.ACTIVE.value,
                "source_ref": spec.source_ref,
                "case_id": spec.case_id,
                "note": spec.note,
                "added_by": spec.added_by or added_by,
                "source_item_id": source_item_id,
                "created_at": now,
                "updated_at": now,
                "status_changed_by": "",
                "status_reason": "",
                "match_count": 0,
            }
        )
    result = AddResult(existing=repeated)
    for chunk, ids in insert_entries(session, rows):
        result.ids.extend(ids)
        result.added += len(ids)
        if ids:
            record_change(session, bank.id, ids)
        if len(ids) < len(chunk):
            _existing(session, bank, chunk, set(ids), result, revive, added_by)
    if result.added:
        # One record per call (revived entries have their own, in reactivate).
        cases = sorted({str(r["case_id"]) for r in rows if r["case_id"]})
        audit.record(
            session,
            added_by,
            "bank.entries.added",
            None,
            bank=bank.name,
            added=result.added,
            existing=result.existing,
            first_entry_id=min(result.ids),
            last_entry_id=max(result.ids),
            case_ids=cases[:20],
            source_item_id=source_item_id,
        )
    return result


def _existing(
    session: Session,
    bank: Bank,
    chunk: list[dict[str, object]],
    new: set[int],
    result: AddResult,
    revive: bool,
    actor: str,
) -> None:
    by_digest = {str(r["digest"]): r for r in chunk}
    entries = session.scalars(
        select(BankEntry).where(BankEntry.bank_id == bank.id, BankEntry.digest.in_(list(by_digest)))
    )
    to_revive = []
    for entry in entries:
        if entry.id in new:
            continue
        result.existing += 1
        result.existing_ids.append(entry.id)
        if revive and entry.status == EntryStatus.WITHDRAWN.value:
            to_revive.append(entry)
    result.revived += len(reactivate(session, bank, to_revive, actor=actor, reason="submitted again"))
    for entry in to_revive:
        row = by_digest[entry.digest]
        entry.case_id = str(row["case_id"]) or entry.case_id
        entry.source_ref = str(row["source_ref"]) or entry.source_ref


def reactivate(
    session: Session, bank: Bank, entries: Sequence[BankEntry], *, actor: str, reason: str
) -> list[int]:
    """Make withdrawn entries active again because their hash was submitted or
    listed anew (the one way back from a withdrawal); audited, fed to workers."""
    now = utcnow()
    for entry in entries:
        audit.record(
            session,
            actor,
            "bank.entry.resubmitted",
            None,
            bank=bank.name,
            entry_id=entry.id,
            previous=entry.status,
            previous_case_id=entry.case_id,
        )
        entry.status = EntryStatus.ACTIVE.value
        entry.withdrawn_at = None
        entry.status_changed_by = actor
        entry.status_reason = reason
        entry.updated_at = now
    ids = [e.id for e in entries]
    if ids:
        session.flush()
        record_change(session, bank.id, ids)
    return ids


def add_signals(
    session: Session,
    bank: Bank,
    values: dict[str, str],
    added_by: str,
    source_item_id: int | None = None,
    note: str = "",
    revive: bool = False,
) -> int:
    """Add one upload's signals (e.g. a moderator's confirmed removal); returns
    how many entries became active: added, plus withdrawn ones revived with ``revive``."""
    specs = [EntrySpec(signal, value, note=note) for signal, value in values.items() if value]
    result = add_entries(
        session, bank, specs, added_by=added_by, source_item_id=source_item_id, revive=revive
    )
    return result.added + result.revived


def get_entry(session: Session, bank: Bank, entry_id: int) -> BankEntry:
    entry = session.get(BankEntry, entry_id)
    if entry is None or entry.bank_id != bank.id:
        raise NotFound(f"no entry {entry_id} in bank {bank.name!r}")
    return entry


def set_status(
    session: Session,
    bank: Bank,
    entries: Sequence[BankEntry],
    status: EntryStatus,
    *,
    actor: str,
    reason: str = "",
) -> int:
    """Change entries' status (withdraw, disable, enable, quarantine, release);
    returns how many changed. Withdrawn entries stay withdrawn: a withdrawal is a
    victim's or an exchange's decision, so only a new submission brings a hash back."""
    now = utcnow()
    changed = []
    for entry in entries:
        if entry.status == status.value:
            continue
        if entry.status == EntryStatus.WITHDRAWN.value:
            raise Conflict(
                f"entry {entry.id} was withdrawn; only a new submission of the hash brings it back"
            )
        previous = entry.status
        entry.status = status.value
        entry.updated_at = now
        entry.status_changed_by = actor
        entry.status_reason = reason
        if status is EntryStatus.WITHDRAWN:
            entry.withdrawn_at = now
        changed.append(entry.id)
        audit.record(
            session,
            actor,
            f"bank.entry.{status.value}",
            None,
            bank=bank.name,
            entry_id=entry.id,
            previous=previous,
            reason=reason,
        )
    if changed:
        session.flush()
        record_change(session, bank.id, changed)
    return len(changed)


def entries_by_source_ref(session: Session, bank: Bank, refs: Sequence[str]) -> list[BankEntry]:
    if not refs:
        return []
    return list(
        session.scalars(select(BankEntry).where(BankEntry.bank_id == bank.id, BankEntry.source_ref.in_(refs)))
    )


def entries_by_case(session: Session, bank: Bank, case_id: str) -> list[BankEntry]:
    return list(
        session.scalars(
            select(BankEntry)
            .where(BankEntry.bank_id == bank.id, BankEntry.case_id == case_id)
            .order_by(BankEntry.id)
        )
    )


def search_entries(
    session: Session,
    bank: Bank,
    *,
    query: str = "",
    status: str = "",
    signal: str = "",
    before_id: int | None = None,
    limit: int = 50,
) -> list[BankEntry]:
    """Newest first. ``query`` matches a hash prefix, a case id or a source reference."""
    stmt = select(BankEntry).where(BankEntry.bank_id == bank.id)
    if status:
        stmt = stmt.where(BankEntry.status == status)
    if signal:
        stmt = stmt.where(BankEntry.signal == signal)
    if query:
        q = query.strip()
        stmt = stmt.where(
            or_(
                BankEntry.value_prefix.startswith(q.lower()[:64], autoescape=True),
                BankEntry.case_id == q,
                BankEntry.source_ref == q,
            )
        )
    if before_id is not None:
        stmt = stmt.where(BankEntry.id < before_id)
    return list(session.scalars(stmt.order_by(BankEntry.id.desc()).limit(max(1, min(limit, 500)))))


def bank_stats(session: Session, bank: Bank) -> dict[str, int]:
    rows = session.execute(
        select(BankEntry.status, func.count(), func.coalesce(func.sum(BankEntry.match_count), 0))
        .where(BankEntry.bank_id == bank.id)
        .group_by(BankEntry.status)
    ).all()
    out = {s.value: 0 for s in EntryStatus}
    matches = 0
    for status, count, hits in rows:
        out[status] = int(count)
        matches += int(hits)
    out["matches"] = matches
    return out


def export_records(
    session: Session, bank: Bank, statuses: Sequence[str] | None
) -> Iterator[dict[str, object]]:
    """Entries as export rows (oldest first), streamed in pages."""
    last = 0
    while True:
        stmt = select(BankEntry).where(BankEntry.bank_id == bank.id, BankEntry.id > last)
        if statuses is not None:
            stmt = stmt.where(BankEntry.status.in_(statuses))
        page = list(session.scalars(stmt.order_by(BankEntry.id).limit(5000)))
        if not page:
            return
        for e in page:
            yield entry_dict(e, bank.name)
        last = page[-1].id


def bank_dict(bank: Bank, stats: dict[str, int] | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "name": bank.name,
        "action": bank.action,
        "description": bank.description,
        "pdq_distance": bank.pdq_distance,
        "vpdq_share": bank.vpdq_share,
        "enabled": bank.enabled,
        "source": bank.source,
        "created_at": bank.created_at.isoformat(),
        "updated_at": bank.updated_at.isoformat(),
    }
    if stats is not None:
        out["stats"] = stats
    return out


def entry_dict(e: BankEntry, bank_name: str) -> dict[str, object]:
    return {
        "id": e.id,
        "bank": bank_name,
        "signal": e.signal,
        "value": e.value,
        "status": e.status,
        "source_ref": e.source_ref,
        "case_id": e.case_id,
        "note": e.note,
        "added_by": e.added_by,
        "added_at": e.created_at.isoformat(),
        "status_changed_by": e.status_changed_by,
        "status_reason": e.status_reason,
        "withdrawn_at": e.withdrawn_at.isoformat() if e.withdrawn_at else None,
        "match_count": e.match_count,
        "last_matched_at": e.last_matched_at.isoformat() if e.last_matched_at else None,
    }
