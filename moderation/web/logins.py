"""Password logins, through the login form and HTTP Basic (API routes).

Both go through ``users.check_login`` (account lockout after
``LOGIN_MAX_FAILURES`` wrong passwords in a row, for ``LOGIN_LOCKOUT_SECONDS``)
and the per-address limit of ``LOGIN_ATTEMPTS_PER_MINUTE``: every form attempt
counts; of HTTP Basic requests, which an API client sends with every call,
only the failures count, and over the limit Basic is refused too. Over the
limit the answer is 429 with ``Retry-After``, before any password is checked.
Every attempt is audited (``storage/audit.py``); a successful Basic request is not.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from moderation.storage import audit, login_attempts, users
from moderation.storage.models import User, utcnow
from moderation.web.proxies import client_address
from moderation.web.services import services

log = logging.getLogger(__name__)


class TooManyAttempts(Exception):
    """The client address is over its login attempt limit."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many login attempts; try again in {retry_after} s")
        self.retry_after = retry_after


def _policy() -> users.LoginPolicy:
    s = services().settings
    return users.LoginPolicy(max_failures=s.login_max_failures, lockout_seconds=s.login_lockout_seconds)


def _warn(address: str, limit: int) -> None:
    log.warning("login attempts from %s reached %d this minute: refusing more", address, limit)


def _audit(db: Session, username: str, result: users.LoginResult, address: str, method: str) -> None:
    if result.outcome == "ok":
        audit.record_auth(db, username, audit.LOGIN_SUCCESS, address, method=method)
    elif result.outcome == "locked":
        audit.record_auth(
            db, username, audit.LOGIN_LOCKED, address, method=method, reason="attempt while locked"
        )
    else:
        reason = "unknown_user" if result.outcome == "unknown" else "wrong_password"
        audit.record_auth(db, username, audit.LOGIN_FAILURE, address, method=method, reason=reason)
        if result.locked_until is not None:
            until = result.locked_until.isoformat()
            audit.record_auth(db, username, audit.LOGIN_LOCKED, address, method=method, locked_until=until)


def form_login(db: Session, username: str, password: str) -> User | None:
    """A login form submission: the user, or None (one answer for every failure).
    Raises TooManyAttempts over the per-address limit. Commits."""
    address, limit = client_address(), services().settings.login_attempts_per_minute
    if limit:
        attempts = login_attempts.record(db, address)
        db.commit()  # counted even if the check below fails
        if attempts > limit:
            if attempts == limit + 1:  # log once per address and minute
                _warn(address, limit)
            raise TooManyAttempts(login_attempts.retry_after())
    result = users.check_login(db, username, password, _policy())
    _audit(db, username, result, address, "form")
    db.commit()
    return result.user


def basic_login(db: Session, username: str, password: str) -> User | None:
    """HTTP Basic credentials of one API request: the user, or None. Raises
    TooManyAttempts while the address is over its limit. Commits a failure."""
    address, limit = client_address(), services().settings.login_attempts_per_minute
    if limit and login_attempts.count(db, address) >= limit:
        raise TooManyAttempts(login_attempts.retry_after())
    result = users.check_login(db, username, password, _policy(), interactive=False)
    if result.user is not None:
        if db.dirty:  # a success reset the failure count
            db.commit()
        return result.user
    _audit(db, username, result, address, "basic")
    if limit and login_attempts.record(db, address) == limit:
        _warn(address, limit)
    db.commit()
    return None


def sso_login(db: Session, user: User) -> None:
    """The first request of a single sign-on session. Commits."""
    user.last_login_at = utcnow()
    audit.record_auth(db, user.username, audit.LOGIN_SUCCESS, client_address(), method="sso")
    db.commit()
