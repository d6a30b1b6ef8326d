"""User accounts for the review console. Passwords are hashed with scrypt.

``check_login`` also locks an account for ``LoginPolicy.lockout_seconds`` after
``max_failures`` wrong passwords in a row; the count is in the database, so it
holds across web replicas. Every outcome costs one scrypt check, and callers
show one message for all failures, so neither the answer nor its timing tells
whether a username exists or is locked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from moderation.domain import Role
from moderation.storage.models import User, utcnow

ROLES = tuple(r.value for r in Role)
MIN_PASSWORD_LENGTH = 10
MAX_USERNAME = 100


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class LoginPolicy:
    """Lock an account for ``lockout_seconds`` after ``max_failures`` wrong
    passwords in a row. ``max_failures`` 0 turns the lockout off."""

    max_failures: int = 5
    lockout_seconds: int = 900


Outcome = Literal["ok", "unknown", "bad_password", "locked"]


@dataclass(frozen=True)
class LoginResult:
    """``user`` is set only for ``ok``. ``locked_until`` is set when the account
    is locked: already (``locked``) or by this failure (``bad_password``)."""

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


def set_password(session: Session, user: User, password: str) -> None:
    """New password; ends the user's open sessions and lifts a lockout."""
    _check_password(password)
    user.password_hash = generate_password_hash(password, "scrypt")
    user.failed_logins, user.locked_until = 0, None
    user.session_version += 1


def set_active(session: Session, user: User, active: bool) -> None:
    """(De)activate; deactivating ends the user's open sessions at their next request."""
    if user.active and not active:
        user.session_version += 1
    user.active = active


def unlock(session: Session, user: User) -> None:
    user.failed_logins, user.locked_until = 0, None


def check_login(
    session: Session,
    username: str,
    password: str,
    policy: LoginPolicy | None = None,
    now: datetime | None = None,
    *,
    interactive: bool = True,
) -> LoginResult:
    """Check a username and password, counting failures and enforcing the lockout.
    ``interactive`` logins (the form) record ``last_login_at``; per-request HTTP
    Basic checks do not. Changes are left in ``session`` for the caller to commit."""
    policy = policy or LoginPolicy()
    now = now or utcnow()
    user = active_user(session, username)
    if user is None:
        # Spend the same time as a real check so usernames can't be probed by timing.
        check_password_hash(_DUMMY_HASH, password)
        return LoginResult("unknown")
    correct = check_password_hash(user.password_hash, password)
    if user.locked_until is not None and user.locked_until > now:
        return LoginResult("locked", locked_until=user.locked_until)  # even with the right password
    if not correct:
        return _count_failure(session, user, policy, now)
    if user.failed_logins or user.locked_until is not None:
        unlock(session, user)
    if interactive:
        user.last_login_at = now
    return LoginResult("ok", user)


def _count_failure(session: Session, user: User, policy: LoginPolicy, now: datetime) -> LoginResult:
    # One atomic increment: concurrent failures on several replicas all count.
    failures = session.scalar(
        update(User)
        .where(User.id == user.id)
        .values(failed_logins=User.failed_logins + 1)
        .returning(User.failed_logins)
        .execution_options(synchronize_session=False)
    )
    session.expire(user, ["failed_logins"])  # reloaded if read; never written back stale
    if not policy.max_failures or (failures or 0) < policy.max_failures:
        return LoginResult("bad_password")
    until = now + timedelta(seconds=policy.lockout_seconds)
    user.failed_logins, user.locked_until = 0, until  # the next lock needs max_failures more
    return LoginResult("bad_password", locked_until=until)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this password (lockout applies with the default policy)."""
    return check_login(session, username, password).user


def generate_password() -> str:
    return secrets.token_urlsafe(15)


_DUMMY_HASH = generate_password_hash("not-a-real-password", "scrypt")
