"""User accounts for the review console. Passwords are hashed with scrypt.

``check_login`` also locks an account for one source (client address) after
``max_failures`` wrong passwords in a row from it (``storage/lockouts.py``); the
count is in the database, so it holds across web replicas. Every outcome costs
one scrypt check, and callers show one message for all failures, so neither the
answer nor its timing tells whether a username exists or is locked.

A new password or a deactivation ends the user's sessions (``session_version``)
and revokes their personal API tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from moderation.domain import Role
from moderation.storage import lockouts, tokens
from moderation.storage.models import User, utcnow

ROLES = tuple(r.value for r in Role)
MIN_PASSWORD_LENGTH = 10
MAX_USERNAME = 100


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class LoginPolicy:
    """Lock an account for one source for ``lockout_seconds`` (doubling with each
    further lock in a row) after ``max_failures`` wrong passwords in a row from
    that source. ``max_failures`` 0 turns the lockout off."""

    max_failures: int = 5
    lockout_seconds: int = 900


Outcome = Literal["ok", "unknown", "bad_password", "locked"]


@dataclass(frozen=True)
class LoginResult:
    """``user`` is set only for ``ok``. ``locked_until`` is set when the account
    is locked for this source: already (``locked``) or by this failure
    (``bad_password``)."""

    outcome: Outcome
    user: User | None = None
    locked_until: datetime | None = None


def _check_username(username: str) -> None:
    if not username or len(username) > MAX_USERNAME or not username.isprintable():
        raise UserError(f"username must be 1-{MAX_USERNAME} printable characters")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def create_user(session: Session, username: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    _check_username(username)
    _check_password(password)
    if session.scalar(select(User).where(User.username == username)):
        raise UserError(f"user {username!r} already exists")
    user = User(username=username, password_hash=generate_password_hash(password, "scrypt"), role=role)
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username!r}")
    return user


def active_user(session: Session, username: str) -> User | None:
    """The active user of that name; None for names no user can have (too long, NUL)."""
    if not username or len(username) > MAX_USERNAME or "\x00" in username:
        return None
    return session.scalar(select(User).where(User.username == username, User.active.is_(True)))


def set_password(session: Session, user: User, password: str, actor: str = "cli") -> None:
    """New password; ends the user's open sessions, revokes their personal API
    tokens and lifts every lockout."""
    _check_password(password)
    user.password_hash = generate_password_hash(password, "scrypt")
    user.session_version += 1
    unlock(session, user)
    tokens.revoke_user_tokens(session, user.id, actor, reason="password changed")


def set_active(session: Session, user: User, active: bool, actor: str = "cli") -> None:
    """(De)activate; deactivating ends the user's open sessions at their next
    request and revokes their personal API tokens (reactivating revives none)."""
    if user.active and not active:
        user.session_version += 1
        tokens.revoke_user_tokens(session, user.id, actor, reason="user deactivated")
    user.active = active


def unlock(session: Session, user: User) -> None:
    """Lift the user's lockouts, from every source."""
    user.failed_logins, user.locked_until = 0, None  # the account-wide lock of before 0009
    lockouts.clear(session, user.id)


def check_login(
    session: Session,
    username: str,
    password: str,
    policy: LoginPolicy | None = None,
    now: datetime | None = None,
    *,
    interactive: bool = True,
    source: str = lockouts.LOCAL,
) -> LoginResult:
    """Check a username and password from ``source`` (``lockouts.source_of`` the
    client address), counting failures and enforcing that source's lockout.
    ``interactive`` logins (the form) record ``last_login_at``; per-request HTTP
    Basic checks do not. Changes are left in ``session`` for the caller to
    commit; until then the (user, source) lockout row stays locked."""
    policy = policy or LoginPolicy()
    started = now or utcnow()
    user = active_user(session, username)
    if user is None:
        # Spend the same time as a real check so usernames can't be probed by timing.
        check_password_hash(_DUMMY_HASH, password)
        return LoginResult("unknown")
    correct = check_password_hash(user.password_hash, password)
    now = now or utcnow()
    outcome = lockouts.record(
        session,
        user.id,
        source,
        correct,
        started=started,
        now=now,
        max_failures=policy.max_failures,
        lockout_seconds=policy.lockout_seconds,
    )
    if outcome.locked_until is not None and not outcome.locked_now:
        return LoginResult("locked", locked_until=outcome.locked_until)  # even with the right password
    if not correct:
        return LoginResult("bad_password", locked_until=outcome.locked_until)
    if interactive:
        user.last_login_at = now
    return LoginResult("ok", user)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this password (lockout applies with the default policy)."""
    return check_login(session, username, password).user


def generate_password() -> str:
    return secrets.token_urlsafe(15)


_DUMMY_HASH = generate_password_hash("not-a-real-password", "scrypt")
