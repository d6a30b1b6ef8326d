"""Password logins, through the login form and HTTP Basic (API routes).

Both go through ``users.check_login`` (after ``LOGIN_MAX_FAILURES`` wrong
passwords in a row from one source, the account is locked for that source:
``storage/lockouts.py``) and the per-address limit of
``LOGIN_ATTEMPTS_PER_MINUTE`` (``storage/login_attempts.py``, a token bucket
taken atomically before any password is checked). Every form attempt counts.
An HTTP Basic request whose credentials were not verified lately takes an
attempt before its check and gives it back when the password was right, so
only failures count, and no number of parallel requests gets more password
checks than the limit; over the limit Basic is refused too. The answer over
the limit is 429 with ``Retry-After``.

HTTP Basic credentials verified lately (``BASIC_AUTH_CACHE_SECONDS``) are not
checked with scrypt again (``basic_cache.py``). Every attempt is audited
(``storage/audit.py``); a successful Basic request is not.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app
from sqlalchemy.orm import Session

from moderation.storage import audit, lockouts, login_attempts, users
from moderation.storage.models import User, utcnow
from moderation.web.basic_cache import BasicAuthCache
from moderation.web.proxies import client_address
from moderation.web.services import services

log = logging.getLogger(__name__)
CACHE = "moderation.basic_cache"


class TooManyAttempts(Exception):
    """The client address is over its login attempt limit."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many login attempts; try again in {retry_after} s")
        self.retry_after = retry_after


def init_app(app: Flask) -> None:
    """The process's cache of verified HTTP Basic credentials."""
    settings = app.extensions["moderation"].settings
    app.extensions[CACHE] = BasicAuthCache(settings.basic_auth_cache_seconds)


def basic_cache() -> BasicAuthCache:
    return current_app.extensions[CACHE]  # type: ignore[no-any-return]


def _policy() -> users.LoginPolicy:
    s = services().settings
    return users.LoginPolicy(max_failures=s.login_max_failures, lockout_seconds=s.login_lockout_seconds)


_warned: dict[str, float] = {}
_warned_lock = threading.Lock()


def _refuse(source: str, limit: int, retry_after: int) -> TooManyAttempts:
    """The exception to raise; logs once per source and minute."""
    now = time.monotonic()
    with _warned_lock:
        if now - _warned.get(source, -60.0) >= 60:
            if len(_warned) > 10_000:
                _warned.clear()
            _warned[source] = now
            log.warning("login attempts from %s reached %d a minute: refusing more", source, limit)
    return TooManyAttempts(retry_after)


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
    source = lockouts.source_of(address)
    if limit:
        wait = login_attempts.take(db, source, limit)
        db.commit()  # counted even if the check below fails
        if wait is not None:
            raise _refuse(source, limit, wait)
    result = users.check_login(db, username, password, _policy(), source=source)
    _audit(db, username, result, address, "form")
    db.commit()
    return result.user


def basic_login(db: Session, username: str, password: str) -> User | None:
    """HTTP Basic credentials of one API request: the user, or None. Raises
    TooManyAttempts while the address is over its limit. Commits what it counts."""
    address, limit = client_address(), services().settings.login_attempts_per_minute
    source = lockouts.source_of(address)
    cache = basic_cache()
    key = cache.key(source, username, password)
    verified = cache.get(key)
    if verified is not None:
        user = db.get(User, verified.user_id)
        if (
            user is not None
            and user.active
            and user.session_version == verified.session_version
            and user.username == username
        ):
            wait = login_attempts.over_limit(db, source, limit) if limit else None
            if wait is not None:
                raise _refuse(source, limit, wait)
            return user
        cache.forget(key)  # a new password, a deactivation, a logout: check it again
    if limit:
        wait = login_attempts.take(db, source, limit)
        db.commit()  # taken before the check: parallel requests cannot all pass a read of the count
        if wait is not None:
            raise _refuse(source, limit, wait)
    result = users.check_login(db, username, password, _policy(), interactive=False, source=source)
    if result.user is not None:
        if limit:
            login_attempts.refund(db, source, limit)  # ordinary API use: only failures count
        db.commit()
        cache.remember(key, result.user.id, result.user.session_version)
        return result.user
    _audit(db, username, result, address, "basic")
    db.commit()
    return None


def sso_login(db: Session, user: User) -> None:
    """The first request of a single sign-on session. Commits."""
    user.last_login_at = utcnow()
    audit.record_auth(db, user.username, audit.LOGIN_SUCCESS, client_address(), method="sso")
    db.commit()
