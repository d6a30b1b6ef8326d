"""Appeals: reopening a decided item for a moderator who has not decided it.

An appeal arrives from the platform on the appeals topic (events/appeals.py)
or through ``POST /api/v1/appeals`` with the same JSON. ``submit`` reopens the
item in the caller's transaction:

- only a decided item (latest decision ``remove`` or ``allow``) is reopened;
  anything else is a Conflict, an unknown item or content id NotFound;
- the same ``appeal_id`` again changes nothing (at-least-once delivery);
- the item goes back to pending in the ``appeal`` tier (an item decided in the
  restricted queue goes back there: it stays admins' only), with a fresh SLA
  deadline, and everybody who decided it before is excluded from it.

The decision on the reopened item (review.decide) names the appeal and the
decision it supersedes, and ``resolve`` closes the appeal; allowing an item
whose removal was appealed withdraws the confirmed-bank entries that removal
added (``withdraw_overturned``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation import text_limits
from moderation.config import Settings
from moderation.domain import Action, EntryStatus, ItemState, Source, Tier
from moderation.errors import Conflict, NotFound, RequestError
from moderation.storage import audit, banks, queue
from moderation.storage.db import is_unicode_text
from moderation.storage.models import Appeal, Bank, BankEntry, Decision, Item, User, utcnow

FIELDS = frozenset({"appeal_id", "content_id", "item_id", "statement", "submitted_by"})


@dataclass(frozen=True)
class AppealRequest:
    appeal_id: str
    item_id: int | None = None
    content_id: str | None = None
    statement: str = ""
    submitted_by: str = ""


@dataclass(frozen=True)
class Submitted:
    appeal: Appeal
    created: bool  # False: this appeal_id was seen before, nothing changed


def _text(body: Mapping[str, Any], name: str, limit: int, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise RequestError(f"{name} is required")
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise RequestError(f"{name} must be a string of at most {limit} characters")
    text_limits.check(name, value, limit)  # TextTooLong: a RequestError, so an invalid appeal
    if not is_unicode_text(value):  # a lone surrogate: no database column can store it
        raise RequestError(f"{name} must be valid Unicode text")
    value = value.strip()
    if required and not value:
        raise RequestError(f"{name} is required")
    return value


def parse_request(body: object, key: bytes | None = None) -> AppealRequest:
    """Validate an appeal (an API body or a Kafka record's JSON value). Fields
    other than FIELDS are ignored. A record without ``content_id`` and
    ``item_id`` names its content by its key."""
    if not isinstance(body, dict):
        raise RequestError("an appeal is a JSON object with appeal_id and content_id or item_id")
    appeal_id = _text(body, "appeal_id", text_limits.ID, required=True) or ""
    if not appeal_id.isprintable():
        raise RequestError("appeal_id must be printable text")
    item_id = body.get("item_id")
    if item_id is not None and (isinstance(item_id, bool) or not isinstance(item_id, int) or item_id < 1):
        raise RequestError("item_id must be a positive integer")
    content_id = _text(body, "content_id", text_limits.ID) or None
    if content_id is None and item_id is None and key:
        try:
            content_id = key.decode("utf-8").strip() or None
        except UnicodeDecodeError:
            content_id = None
    if content_id is None and item_id is None:
        raise RequestError("name the decided item: content_id or item_id")
    return AppealRequest(
        appeal_id=appeal_id,
        item_id=item_id,
        content_id=content_id,
        statement=_text(body, "statement", text_limits.STATEMENT) or "",
        submitted_by=_text(body, "submitted_by", text_limits.ID) or "",
    )


def submit(
    session: Session,
    settings: Settings,
    request: AppealRequest,
    *,
    source: str,
    actor: str,
    now: datetime | None = None,
) -> Submitted:
    """Record the appeal and reopen its item (module docstring). The caller commits."""
    existing = find(session, request.appeal_id)
    if existing is not None:
        return Submitted(existing, False)
    item = _locked_item(session, request)
    latest = latest_decision(session, item.id)
    if (
        item.state != ItemState.DECIDED.value
        or latest is None
        or latest.action not in (Action.REMOVE, Action.ALLOW)
    ):
        raise Conflict(
            f"item {item.id} is not decided (state {item.state}): "
            "only a removed or allowed item can be appealed"
        )
    appeal = Appeal(
        appeal_id=request.appeal_id,
        item_id=item.id,
        source=source,
        submitted_by=request.submitted_by,
        statement=request.statement,
        previous_decision_id=latest.id,
        created_at=now or utcnow(),
    )
    session.add(appeal)
    restricted = bool((latest.payload or {}).get("restricted"))
    item.tier = Tier.RESTRICTED.value if restricted else Tier.APPEAL.value
    item.first_review = None
    queue.release(session, item)
    queue.schedule(item, settings, now=now, restart_sla=True)
    excluded = []
    for user_id, username in _deciders(session, item.id):
        queue.exclude(session, item.id, user_id, "decided")
        excluded.append(username)
    audit.record(
        session,
        actor,
        "appeal.open",
        item.id,
        appeal_id=request.appeal_id,
        source=source,
        submitted_by=request.submitted_by,
        supersedes=latest.idempotency_key,
        tier=item.tier,
        excluded=excluded,
    )
    session.flush()
    return Submitted(appeal, True)


def find(session: Session, appeal_id: str) -> Appeal | None:
    return session.scalar(select(Appeal).where(Appeal.appeal_id == appeal_id))


def _locked_item(session: Session, request: AppealRequest) -> Item:
    """The appealed item, row-locked so two appeals of one item open one at a time."""
    item_id: int | None = request.item_id
    if item_id is None:
        # A content id normally has one item; of several, the latest decided one.
        rows = session.execute(
            select(Item.id, Item.state).where(Item.content_id == request.content_id).order_by(Item.id.desc())
        ).all()
        decided = [r.id for r in rows if r.state == ItemState.DECIDED.value]
        item_id = decided[0] if decided else (rows[0].id if rows else None)
    item = session.get(Item, item_id, with_for_update=True) if item_id is not None else None
    if item is None:
        what = f"item {request.item_id}" if request.item_id is not None else f"content {request.content_id!r}"
        raise NotFound(f"no {what} to appeal")
    if request.content_id is not None and item.content_id != request.content_id:
        raise RequestError(f"item {item.id} is not content {request.content_id!r}")
    return item


def latest_decision(session: Session, item_id: int) -> Decision | None:
    return session.scalar(
        select(Decision).where(Decision.item_id == item_id).order_by(Decision.id.desc()).limit(1)
    )


def _deciders(session: Session, item_id: int) -> list[tuple[int, str]]:
    """(user id, username) of everybody who decided the item: each moderator
    decision's moderator and, for four-eyes removals, its second moderator."""
    names: set[str] = set()
    for moderator, payload in session.execute(
        select(Decision.moderator, Decision.payload).where(
            Decision.item_id == item_id, Decision.source == Source.MODERATOR.value
        )
    ):
        if moderator:
            names.add(moderator)
        second = (payload or {}).get("second_moderator")
        if isinstance(second, str) and second:
            names.add(second)
    if not names:
        return []
    rows = session.execute(select(User.id, User.username).where(User.username.in_(sorted(names))))
    return [(int(r.id), str(r.username)) for r in rows]


def open_appeal(session: Session, item: Item) -> Appeal | None:
    """The item's unresolved appeal, if it is being reviewed again."""
    if item.decided_at is None:
        return None  # never decided, so not under appeal (skips a query on most items)
    return session.scalar(
        select(Appeal)
        .where(Appeal.item_id == item.id, Appeal.resolved_at.is_(None))
        .order_by(Appeal.id.desc())
        .limit(1)
    )


def previous_decision(session: Session, appeal: Appeal) -> Decision | None:
    """The decision the appeal is against (loaded once per session: review.decide
    asks for its key, then ``resolve`` for its action)."""
    if appeal.previous_decision_id is None:
        return None
    return session.get(Decision, appeal.previous_decision_id)


def superseded_key(session: Session, appeal: Appeal) -> str | None:
    """The idempotency key of the decision the appeal is against."""
    previous = previous_decision(session, appeal)
    return previous.idempotency_key if previous is not None else None


def resolve(session: Session, appeal: Appeal, item: Item, decision: Decision, actor: str) -> int:
    """Close the appeal with ``decision`` (flushed); an allow that overturns a
    removal withdraws the confirmed-bank entries it added. Returns how many."""
    appeal.resolved_at = utcnow()
    appeal.decision_id = decision.id
    previous = previous_decision(session, appeal)
    overturned = previous is not None and previous.action == Action.REMOVE and decision.action == Action.ALLOW
    withdrawn = withdraw_overturned(session, item, actor, appeal.appeal_id) if overturned else 0
    audit.record(
        session,
        actor,
        "appeal.resolve",
        item.id,
        appeal_id=appeal.appeal_id,
        decision=decision.action,
        idempotency_key=decision.idempotency_key,
        overturned=overturned,
        withdrawn=withdrawn,
    )
    return withdrawn


def withdraw_overturned(session: Session, item: Item, actor: str, appeal_id: str) -> int:
    """Withdraw the confirmed bank's entries that ``item``'s removal added, so
    copies of a picture found not violating are no longer removed automatically.
    Each withdrawal is audited and fed to the workers (banks.set_status)."""
    bank = session.scalar(select(Bank).where(Bank.name == banks.CONFIRMED_BANK))
    if bank is None:
        return 0
    entries = session.scalars(
        select(BankEntry).where(
            BankEntry.bank_id == bank.id,
            BankEntry.source_item_id == item.id,
            BankEntry.status != EntryStatus.WITHDRAWN.value,
        )
    ).all()
    return banks.set_status(
        session,
        bank,
        entries,
        EntryStatus.WITHDRAWN,
        actor=actor,
        reason=f"removal overturned on appeal {appeal_id}",
    )


def appeal_view(session: Session, item: Item) -> dict[str, Any] | None:
    """What the reviewer of an appealed item sees: the appeal and the decision it is against."""
    appeal = open_appeal(session, item)
    if appeal is None:
        return None
    previous = previous_decision(session, appeal)
    return {
        "appeal_id": appeal.appeal_id,
        "statement": appeal.statement,
        "submitted_by": appeal.submitted_by,
        "created_at": appeal.created_at.isoformat(),
        "previous": None
        if previous is None
        else {
            "action": previous.action,
            "reason": previous.reason,
            "moderator": previous.moderator,
            "decided_at": previous.created_at.isoformat(),
        },
    }


def appeal_dict(appeal: Appeal, item: Item, created: bool) -> dict[str, Any]:
    """The API's answer to a submitted appeal."""
    return {
        "appeal_id": appeal.appeal_id,
        "item_id": appeal.item_id,
        "content_id": item.content_id,
        "created": created,
        "state": item.state,
        "tier": item.tier,
        "resolved": appeal.resolved_at is not None,
        "decision_id": appeal.decision_id,
    }
