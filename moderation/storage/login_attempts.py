"""Login attempts per client address per minute, for the per-address rate limit.

Counted in the database so the limit holds across web replicas. Windows are
fixed minutes (aligned to the epoch), so a burst straddling two windows may
reach up to twice the limit; old windows are purged as new ones start.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from moderation.storage.models import LoginAttempt, utcnow

WINDOW_SECONDS = 60
KEEP = timedelta(minutes=10)


def window_start(now: datetime) -> datetime:
    return now.replace(second=0, microsecond=0)


def retry_after(now: datetime | None = None) -> int:
    """Whole seconds until the current window ends (at least 1)."""
    now = now or utcnow()
    return max(1, WINDOW_SECONDS - now.second)


def count(session: Session, address: str, now: datetime | None = None) -> int:
    """Attempts from ``address`` in the current window so far."""
    now = now or utcnow()
    found = session.scalar(
        select(LoginAttempt.attempts).where(
            LoginAttempt.address == address[:64], LoginAttempt.window_start == window_start(now)
        )
    )
    return int(found or 0)


def record(session: Session, address: str, now: datetime | None = None) -> int:
    """Count one attempt from ``address``; returns the window's count including it."""
    now = now or utcnow()
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    counted = session.scalar(
        upsert(LoginAttempt)
        .values(address=address[:64], window_start=window_start(now), attempts=1)
        .on_conflict_do_update(
            index_elements=["address", "window_start"], set_={"attempts": LoginAttempt.attempts + 1}
        )
        .returning(LoginAttempt.attempts)
    )
    attempts = int(counted or 0)
    if attempts == 1:  # an address's first attempt this minute: drop windows nobody reads
        session.execute(
            delete(LoginAttempt)
            .where(LoginAttempt.window_start < window_start(now) - KEEP)
            .execution_options(synchronize_session=False)
        )
    return attempts
