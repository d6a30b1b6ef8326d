"""Account lockout per account and source, so that a lockout cannot be used as a weapon.

Wrong passwords are counted per (account, source): the client address, or its
/64 network for IPv6 (``source_of``). After ``LoginPolicy.max_failures`` in a
row from one source the account is locked **for that source only**, for
``lockout_seconds``, twice as long for each further lock in a row from the same
source (at most ``MAX_DOUBLINGS`` times; a correct password, or a day without
failures, starts the doubling again). Anyone else, the account's owner
included, still logs in from anywhere else, so five wrong guesses from one
address no longer lock a moderator out of the console. The per-address rate
limit (``login_attempts``) bounds how many sources one attacker can use a minute.

Each attempt's outcome is decided under a row lock (an upsert that writes the
row, held until the caller commits), after the password was checked: attempts
from one source are counted one at a time, on any number of replicas. A correct
password from a locked source is refused. A correct password from an unlocked
source resets the count, and wrong passwords from that source that were already
being checked when it did are not counted: a burst of attempts that contains
the right password either logs in and leaves the account unlocked, or is refused.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from moderation.storage.models import LoginFailure

MAX_DOUBLINGS = 6  # the 7th lock in a row and later ones last 64 times LOGIN_LOCKOUT_SECONDS
DOUBLING_RESETS_AFTER = timedelta(days=1)
KEEP = timedelta(days=2)
LOCAL = "local"  # checks without a client address (the shell's `authenticate`)
MAX_SOURCE = 64


@dataclass(frozen=True)
class Outcome:
    """``locked_until``: the source is locked (already, or by this failure when
    ``locked_now``). ``counted``: a wrong password that counted towards a lock."""

    locked_until: datetime | None = None
    locked_now: bool = False
    counted: bool = False


def source_of(address: str) -> str:
    """The lockout and rate-limit key of a client address: IPv4 as is, IPv6 as its
    /64 network (one subscriber's whole range), anything else as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:MAX_SOURCE] or LOCAL
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def record(
    session: Session,
    user_id: int,
    source: str,
    correct: bool,
    *,
    started: datetime,
    now: datetime,
    max_failures: int,
    lockout_seconds: int,
) -> Outcome:
    """Record one checked password for ``user_id`` from ``source`` (``started``:
    when its check began). Locks the row until the caller commits."""
    row = _lock_row(session, user_id, source[:MAX_SOURCE], now)
    key = (LoginFailure.user_id == user_id) & (LoginFailure.source == row.source)
    if row.updated_at == now and not row.failures and row.reset_at is None:
        _purge(session, now)  # a new (user, source) row: drop the ones nobody needs any more
    if row.locked_until is not None and row.locked_until > now:
        return Outcome(locked_until=row.locked_until)  # even for the right password
    if correct:  # reset_at marks the failures already in flight as part of a finished burst
        _set(session, key, failures=0, lockouts=0, locked_until=None, reset_at=now, updated_at=now)
        return Outcome()
    if not max_failures or (row.reset_at is not None and row.reset_at > started):
        # Lockout off; or this source logged in (or was locked) while this
        # password was being checked: the burst it belonged to is over.
        return Outcome()
    lockouts = row.lockouts if now - row.updated_at < DOUBLING_RESETS_AFTER else 0
    failures = row.failures + 1
    if failures < max_failures:
        _set(session, key, failures=failures, lockouts=lockouts, updated_at=now)
        return Outcome(counted=True)
    until = now + timedelta(seconds=lockout_seconds * 2 ** min(lockouts, MAX_DOUBLINGS))
    _set(session, key, failures=0, lockouts=lockouts + 1, locked_until=until, reset_at=now, updated_at=now)
    return Outcome(locked_until=until, locked_now=True, counted=True)


def clear(session: Session, user_id: int) -> None:
    """Lift every lock and count of ``user_id`` (``moderation user unlock``, a new password)."""
    session.execute(
        delete(LoginFailure)
        .where(LoginFailure.user_id == user_id)
        .execution_options(synchronize_session=False)
    )


def locks(session: Session, user_id: int, now: datetime) -> list[LoginFailure]:
    """The sources ``user_id`` is locked for now."""
    return list(
        session.scalars(
            select(LoginFailure).where(LoginFailure.user_id == user_id, LoginFailure.locked_until > now)
        )
    )


def _lock_row(session: Session, user_id: int, source: str, now: datetime) -> LoginFailure:
    """The (user, source) row, created if missing, locked until commit: a write
    that changes nothing takes the row lock and returns the row as it is."""
    upsert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    row = session.execute(
        upsert(LoginFailure)
        .values(user_id=user_id, source=source, failures=0, lockouts=0, updated_at=now)
        .on_conflict_do_update(index_elements=["user_id", "source"], set_={"source": LoginFailure.source})
        .returning(LoginFailure)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return row


def _set(session: Session, key: ColumnElement[bool], **values: object) -> None:
    session.execute(
        update(LoginFailure).where(key).values(**values).execution_options(synchronize_session=False)
    )


def _purge(session: Session, now: datetime) -> None:
    """Rows of sources quiet for days and not locked: they mean the same as no row."""
    session.execute(
        delete(LoginFailure)
        .where(
            LoginFailure.updated_at < now - KEEP,
            or_(LoginFailure.locked_until.is_(None), LoginFailure.locked_until < now),
        )
        .execution_options(synchronize_session=False)
    )
