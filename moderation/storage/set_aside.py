"""Outbox rows the broker refused for good: listed for admins, retried or discarded.

A sweep (storage/outbox.py, storage/deadletters.py) sets aside a decision or a
dead letter the broker will never accept (too large, an invalid record) with
the broker's reason, so it cannot stop the sweep or the process; everything
else keeps flowing. It stays set aside until an admin acts on it at
/admin/outbox (web/outbox_admin.py):

- retry: the mark is cleared and the next sweep (within 5 s) produces the row
  again. Fix the cause first (a topic's ``max.message.bytes``, a broker ACL
  for the record's size...), or it is set aside again;
- shorten the note and retry (decisions whose note is longer than
  ``text_limits.NOTE``: written before every boundary refused long notes): the
  published note is cut to the limit and says so; the full note stays in the
  audit record of the decision;
- discard: never published. Rows are never deleted.

Order: an item's decisions are published in ``sequence`` order (docs/events.md),
so the item's later decisions wait behind a set-aside one (``waiting``) until
it is retried and published, or discarded; after a discard they are published
and the platform sees a gap in ``sequence``. Every change is audited
(``outbox.retry``, ``outbox.shorten``, ``outbox.discard``) in the caller's
transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from moderation import text_limits
from moderation.errors import Conflict, NotFound, RequestError
from moderation.storage import audit
from moderation.storage.models import DeadLetter, Decision, utcnow
from moderation.storage.outbox import encode

OUTBOXES = ("decisions", "dead_letters")
PAGE_ROWS = 200
SHORTENED = " [shortened by {actor} from {length:,} characters: the full note is in the audit log]"


@dataclass(frozen=True)
class SetAside:
    """One set-aside row as the admin page lists it."""

    outbox: str  # decisions | dead_letters
    id: int
    item_id: int | None
    label: str  # a decision's idempotency key; a dead letter's source topic:partition:offset
    summary: str  # a decision's action, reason and moderator; a dead letter's error class
    size: int  # bytes of key and value as produced
    set_aside_at: datetime
    reason: str
    waiting: int = 0  # later decisions of the item held behind this one
    note_length: int = 0  # characters of a decision's note

    @property
    def note_too_long(self) -> bool:
        return self.note_length > text_limits.NOTE


def open_rows(table: type[Decision] | type[DeadLetter]) -> list[ColumnElement[bool]]:
    """The conditions of a row that is set aside now (not yet retried, published or discarded)."""
    return [table.set_aside_at.is_not(None), table.published_at.is_(None), table.discarded_at.is_(None)]


def counts(session: Session) -> list[tuple[str, int]]:
    """(outbox, rows set aside now) for both outboxes: the moderation_outbox_set_aside gauge."""
    out = []
    for name, table in (("decisions", Decision), ("dead_letters", DeadLetter)):
        count = session.scalar(select(func.count()).select_from(table).where(*open_rows(table))) or 0
        out.append((name, int(count)))
    return out


def list_rows(session: Session, limit: int = PAGE_ROWS) -> list[SetAside]:
    """Set-aside decisions, then dead letters, oldest first, at most ``limit`` of each."""
    decisions = list(
        session.scalars(select(Decision).where(*open_rows(Decision)).order_by(Decision.id).limit(limit))
    )
    rows = [
        SetAside(
            "decisions",
            d.id,
            d.item_id,
            d.idempotency_key,
            f"{d.action} ({d.reason})" + (f" by {d.moderator}" if d.moderator else f", {d.source}"),
            sum(len(part) for part in encode(d)),
            _at(d),
            d.set_aside_reason or "",
            _waiting(session, d),
            len(str((d.payload or {}).get("note") or "")),
        )
        for d in decisions
    ]
    letters = session.scalars(
        select(DeadLetter).where(*open_rows(DeadLetter)).order_by(DeadLetter.id).limit(limit)
    )
    rows += [
        SetAside(
            "dead_letters",
            r.id,
            None,
            f"{r.source_topic}:{r.source_partition}:{r.source_offset}",
            r.error_class,
            len(r.key) + len(r.value),
            _at(r),
            r.set_aside_reason or "",
        )
        for r in letters
    ]
    return rows


def retry(session: Session, outbox: str, row_id: int, actor: str) -> str:
    """Clear the mark: the next sweep produces the row again. Returns the message to show."""
    row = _set_aside_row(session, outbox, row_id)
    reason = row.set_aside_reason
    row.set_aside_at, row.set_aside_reason = None, None
    audit.record(session, actor, "outbox.retry", _item_id(row), outbox=outbox, row_id=row_id, reason=reason)
    return f"{_name(outbox)} {row_id} will be produced again by the next sweep (within 5 s)."


def shorten_note(session: Session, row_id: int, actor: str) -> str:
    """Cut a set-aside decision's over-long note to ``text_limits.NOTE`` (saying
    so in the note) and retry it."""
    row = _set_aside_row(session, "decisions", row_id)
    assert isinstance(row, Decision)
    note = str((row.payload or {}).get("note") or "")
    if len(note) <= text_limits.NOTE:
        raise Conflict(
            f"the note of decision {row_id} is within {text_limits.NOTE:,} characters; retry it as it is"
        )
    marker = SHORTENED.format(actor=actor, length=len(note))
    row.payload = {**row.payload, "note": note[: text_limits.NOTE - len(marker)] + marker}
    reason = row.set_aside_reason
    row.set_aside_at, row.set_aside_reason = None, None
    audit.record(
        session,
        actor,
        "outbox.shorten",
        row.item_id,
        outbox="decisions",
        row_id=row_id,
        reason=reason,
        note_length=len(note),
        idempotency_key=row.idempotency_key,
    )
    return (
        f"Decision {row_id}: note shortened from {len(note):,} to {text_limits.NOTE:,} characters; "
        "it will be produced by the next sweep (within 5 s)."
    )


def discard(session: Session, outbox: str, row_id: int, actor: str) -> str:
    """Never publish the row. A decision's later decisions of its item then go out."""
    row = _set_aside_row(session, outbox, row_id)
    row.discarded_at = utcnow()
    audit.record(
        session,
        actor,
        "outbox.discard",
        _item_id(row),
        outbox=outbox,
        row_id=row_id,
        reason=row.set_aside_reason,
    )
    return f"{_name(outbox)} {row_id} discarded: it will never be published."


def _set_aside_row(session: Session, outbox: str, row_id: int) -> Decision | DeadLetter:
    if outbox not in OUTBOXES:
        raise NotFound(f"no outbox named {outbox[:40]!r}")
    row: Decision | DeadLetter | None
    if outbox == "decisions":
        row = session.get(Decision, row_id, with_for_update=True)
    else:
        row = session.get(DeadLetter, row_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no {_name(outbox).lower()} {row_id}")
    if row.set_aside_at is None or row.published_at is not None or row.discarded_at is not None:
        raise RequestError(
            f"{_name(outbox)} {row_id} is not set aside (retried, published or discarded already)"
        )
    return row


def _waiting(session: Session, decision: Decision) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(Decision)
        .where(
            Decision.item_id == decision.item_id,
            Decision.id > decision.id,
            Decision.published_at.is_(None),
            Decision.discarded_at.is_(None),
        )
    )
    return int(count or 0)


def _item_id(row: Decision | DeadLetter) -> int | None:
    return row.item_id if isinstance(row, Decision) else None


def _at(row: Decision | DeadLetter) -> datetime:
    assert row.set_aside_at is not None
    return row.set_aside_at


def _name(outbox: str) -> str:
    return "Decision" if outbox == "decisions" else "Dead letter"
