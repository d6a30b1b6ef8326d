"""How much a moderator has looked at since their last break.

An exposure session is open (``ended_at`` IS NULL) from one acknowledged break
to the next. It counts:

- ``items_viewed``: distinct items whose page the moderator opened in this
  session. An item counts once, however often its page is reloaded: the audit
  log's ``item.view`` rows (one per page view) say whether it was seen already.
- ``revealed_seconds``: seconds the media was revealed while the page was
  visible, as the page reports them (each report clamped to
  ``MAX_REPORT_SECONDS``).

When either reaches its limit (``break_due``) the console stops serving items
until the break is acknowledged (``take_break``), which ends the session; the
next view or report opens a new one. The caller commits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from moderation.storage import audit
from moderation.storage.models import AuditRecord, ExposureSession, User, utcnow

MAX_REPORT_SECONDS = 120.0  # the page reports every ~15 s: more in one report is not believed
BREAK = "exposure.break"
BREAK_PROMPTED = "exposure.break_prompted"


@dataclass(frozen=True)
class Limits:
    """Break thresholds; 0 disables one."""

    items: int
    revealed_seconds: int


def current(session: Session, user: User) -> ExposureSession:
    """The user's open exposure session, opened now if there is none."""
    open_session = session.scalar(
        select(ExposureSession)
        .where(ExposureSession.user_id == user.id, ExposureSession.ended_at.is_(None))
        .order_by(ExposureSession.id.desc())
        .limit(1)
    )
    if open_session is None:
        now = utcnow()
        open_session = ExposureSession(
            user_id=user.id, started_at=now, last_seen_at=now, items_viewed=0, revealed_seconds=0.0
        )
        session.add(open_session)
        session.flush()
    return open_session


def record_view(session: Session, user: User, item_id: int) -> ExposureSession:
    """Count ``item_id`` as viewed unless it was already viewed this session.

    Call it before the view's own ``item.view`` audit record is added."""
    exposure = current(session, user)
    if not viewed_since(session, user, item_id, exposure.started_at):
        exposure.items_viewed += 1
    exposure.last_seen_at = utcnow()
    return exposure


def viewed_since(session: Session, user: User, item_id: int, since: datetime) -> bool:
    """Whether the user opened the item's page (an ``item.view`` audit row) since ``since``."""
    return bool(
        session.scalar(
            select(
                exists().where(
                    AuditRecord.item_id == item_id,
                    AuditRecord.actor == user.username,
                    AuditRecord.action == "item.view",
                    AuditRecord.at >= since,
                )
            )
        )
    )


def clamp_seconds(seconds: float) -> float:
    """A report's seconds as counted: 0 for nonsense, at most ``MAX_REPORT_SECONDS``."""
    if not math.isfinite(seconds) or seconds <= 0:
        return 0.0
    return min(seconds, MAX_REPORT_SECONDS)


def record_revealed(exposure: ExposureSession, seconds: float) -> float:
    """Add a report of revealed seconds (clamped) to the open session
    (``current``); returns what was counted.

    The caller checks that the user may see the item the report is about."""
    counted = clamp_seconds(seconds)
    exposure.revealed_seconds = (exposure.revealed_seconds or 0.0) + counted
    exposure.last_seen_at = utcnow()
    return counted


def break_due(limits: Limits, exposure: ExposureSession) -> bool:
    """Whether this session has reached a break threshold."""
    if limits.items > 0 and exposure.items_viewed >= limits.items:
        return True
    return limits.revealed_seconds > 0 and (exposure.revealed_seconds or 0.0) >= limits.revealed_seconds


def mark_prompted(session: Session, user: User, exposure: ExposureSession) -> None:
    """Remember (and audit) the first time the break prompt was shown."""
    if exposure.break_prompted_at is None:
        exposure.break_prompted_at = utcnow()
        audit.record(session, user.username, BREAK_PROMPTED, None, **summary(exposure))


def take_break(session: Session, user: User, now: datetime | None = None) -> ExposureSession:
    """End every open session of the user (audited with its counts); returns a fresh one."""
    now = now or utcnow()
    ended = session.scalars(
        select(ExposureSession).where(ExposureSession.user_id == user.id, ExposureSession.ended_at.is_(None))
    ).all()
    for exposure in ended:
        exposure.ended_at = now
        audit.record(session, user.username, BREAK, None, **summary(exposure))
    session.flush()
    return current(session, user)


def summary(exposure: ExposureSession) -> dict[str, object]:
    return {
        "items_viewed": exposure.items_viewed,
        "revealed_seconds": round(exposure.revealed_seconds or 0.0, 1),
        "started_at": exposure.started_at.isoformat() if exposure.started_at else None,
    }
