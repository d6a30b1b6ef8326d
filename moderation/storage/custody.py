"""Chain of custody: every handling of a piece of evidence, hash-chained.

Each record's ``record_hash`` is SHA-256 of the previous record's hash followed
by the canonical JSON (sorted keys, no spaces, UTF-8) of ``item_id``, ``at``
(ISO 8601, UTC, microseconds), ``actor``, ``action`` and ``details``; the first
record's previous hash is the empty string. Anyone holding the records (an
exported ``custody.json``) can recompute the chain without a key.

What the chain shows: a record changed, deleted or inserted between others no
longer links. What it cannot show alone: records appended at the end by someone
with write access to the database who recomputes the hashes; the audit log
(which carries each record's hash) and earlier exports (which carry the head
hash at the time) are the cross-checks. The table is append-only by trigger.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation.storage.models import CustodyRecord, utcnow

PRESERVED = "preserved"
DECISION = "decision"
VIEWED = "viewed"
EXPORTED = "exported"
HOLD = "hold"
RELEASE = "release"
PURGED = "purged"
MAX_ACTOR = 100


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    """SHA-256 of ``value``'s canonical JSON (manifests are fingerprinted with it)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(
    prev_hash: str, item_id: int, at: datetime | str, actor: str, action: str, details: Mapping[str, Any]
) -> str:
    body = {
        "item_id": item_id,
        "at": at if isinstance(at, str) else timestamp(at),
        "actor": actor,
        "action": action,
        "details": details,
    }
    return hashlib.sha256(prev_hash.encode() + canonical_json(body)).hexdigest()


def append(session: Session, item_id: int, actor: str, action: str, **details: Any) -> CustodyRecord:
    """Add a record after the item's latest one, in the caller's transaction.
    Callers lock the evidence row first, so two appends never share a predecessor."""
    prev = session.scalars(
        select(CustodyRecord.record_hash)
        .where(CustodyRecord.item_id == item_id)
        .order_by(CustodyRecord.id.desc())
        .limit(1)
    ).first()
    at = utcnow()
    actor = actor[:MAX_ACTOR]
    details = json.loads(canonical_json(details))  # as the JSON column gives it back
    record = CustodyRecord(
        item_id=item_id,
        at=at,
        actor=actor,
        action=action,
        details=details,
        prev_hash=prev or "",
        record_hash=record_hash(prev or "", item_id, at, actor, action, details),
    )
    session.add(record)
    session.flush()  # its id orders the chain
    return record


def records(session: Session, item_id: int) -> list[CustodyRecord]:
    return list(
        session.scalars(
            select(CustodyRecord).where(CustodyRecord.item_id == item_id).order_by(CustodyRecord.id)
        )
    )


def as_dict(record: CustodyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "item_id": record.item_id,
        "at": timestamp(record.at),
        "actor": record.actor,
        "action": record.action,
        "details": record.details,
        "prev_hash": record.prev_hash,
        "record_hash": record.record_hash,
    }


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    records: int
    head: str  # the last record's hash ("" for no records)
    bad_id: int | None = None  # the first record that does not verify
    problem: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "head": self.head,
            "first_bad_record": self.bad_id,
            "problem": self.problem,
        }


def verify_records(rows: Iterable[Mapping[str, Any]]) -> ChainCheck:
    """Check a chain given as ``as_dict`` rows in order (pure: also for exported chains)."""
    prev, count = "", 0
    for row in rows:
        count += 1
        if row["prev_hash"] != prev:
            return ChainCheck(False, count, prev, row["id"], "does not link to the record before it")
        want = record_hash(prev, row["item_id"], row["at"], row["actor"], row["action"], row["details"])
        if row["record_hash"] != want:
            return ChainCheck(False, count, prev, row["id"], "its hash does not match its content")
        prev = row["record_hash"]
    if count == 0:
        return ChainCheck(False, 0, "", None, "no custody records")
    return ChainCheck(True, count, prev)


def verify(session: Session, item_id: int) -> ChainCheck:
    return verify_records(as_dict(r) for r in records(session, item_id))
