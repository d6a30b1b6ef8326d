"""Console login sessions, kept in Flask's signed session cookie.

A login starts a fresh session (no fixation) holding the user id, the user's
``session_version`` and two timestamps: ``login_at`` and ``seen_at``. Every
request checks them server-side: a session idle for ``SESSION_IDLE_SECONDS``
or older than ``SESSION_MAX_SECONDS`` is cleared (audited as
``session.expired``), so the console redirects to the login page and the API
answers 401. A changed password or a deactivation bumps the user's
``session_version``, which ends their open sessions. 0 turns a limit off.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

from flask import Flask, g, session
from flask.sessions import SessionMixin
from sqlalchemy.orm import Session

from moderation.config import Settings
from moderation.storage import audit
from moderation.storage.models import User
from moderation.web.proxies import client_address
from moderation.web.services import services

USER_ID, VERSION, LOGIN_AT, SEEN_AT = "user_id", "session_version", "login_at", "seen_at"
SSO_USER = "sso_user_id"
SEEN_RESOLUTION_S = 15  # rewrite the cookie for activity at most this often
FALLBACK_LIFETIME = timedelta(days=31)  # Flask's default, for SESSION_MAX_SECONDS=0


def configure(app: Flask, settings: Settings) -> None:
    secure = not settings.dev_mode
    app.config.update(
        # __Host-: the browser refuses the cookie unless Secure, Path=/ and host-only.
        SESSION_COOKIE_NAME="__Host-session" if secure else "session",
        SESSION_COOKIE_HTTPONLY=True,
        # Lax, not Strict: a link to an item from a ticket or chat must not land
        # logged out. Cross-site POSTs carry no cookie, and every POST needs the CSRF token.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=(
            timedelta(seconds=settings.session_max_seconds)
            if settings.session_max_seconds
            else FALLBACK_LIFETIME
        ),
    )
    app.before_request(check_age)


def begin(cookie: MutableMapping[str, Any], user: User, now: float | None = None) -> None:
    """Start a fresh session for ``user`` in ``cookie`` (Flask's session, or a
    test client's ``session_transaction()``)."""
    now = time.time() if now is None else now
    cookie.clear()
    cookie.update({USER_ID: user.id, VERSION: user.session_version, LOGIN_AT: int(now), SEEN_AT: int(now)})
    if isinstance(cookie, SessionMixin):
        cookie.permanent = True  # the cookie expires with the session, not with the browser


def _expiry(now: float) -> str | None:
    settings = services().settings
    login_at, seen_at = session.get(LOGIN_AT), session.get(SEEN_AT)
    if not isinstance(login_at, int) or not isinstance(seen_at, int):
        return "invalid"  # e.g. a session from before this check existed
    if settings.session_max_seconds and now - login_at >= settings.session_max_seconds:
        return "absolute"
    if settings.session_idle_seconds and now - seen_at >= settings.session_idle_seconds:
        return "idle"
    return None


def check_age() -> None:
    """Before every request: end an expired session, note activity on a live one."""
    if USER_ID not in session:
        return
    now = time.time()
    reason = _expiry(now)
    if reason is None:
        if now - session[SEEN_AT] >= SEEN_RESOLUTION_S:
            session[SEEN_AT] = int(now)
        return
    user_id = session.get(USER_ID)
    session.clear()
    g.session_expired = True
    with services().sessions() as db:
        user = db.get(User, user_id) if isinstance(user_id, int) else None
        actor = user.username if user is not None else f"user:{user_id}"
        audit.record_auth(db, actor, audit.SESSION_EXPIRED, client_address(), reason=reason)
        db.commit()


def session_user(db: Session) -> User | None:
    """The session's user while the session is valid: the user is active and
    their session version unchanged. Otherwise the session is cleared."""
    user_id = session.get(USER_ID)
    if user_id is None:
        return None
    user = db.get(User, user_id) if isinstance(user_id, int) else None
    if user is not None and user.active and session.get(VERSION) == user.session_version:
        return user
    session.clear()
    g.session_expired = True
    reason = "deactivated" if user is not None and not user.active else "credentials_changed"
    actor = user.username if user is not None else f"user:{user_id}"
    audit.record_auth(db, actor, audit.SESSION_EXPIRED, client_address(), reason=reason)
    db.commit()
    return None


def end() -> None:
    session.clear()
