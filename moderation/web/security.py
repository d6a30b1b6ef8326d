"""Authentication helpers, CSRF tokens and security headers.

Two decorators guard views:

- ``login_required``: the review console and the queue API (session cookie or
  single sign-on; on API routes also HTTP Basic and personal API tokens of
  scope ``review``, which act as their user).
- ``api_access``: bank and submission API routes, which also accept API tokens
  (``Authorization: Bearer mod_...``) and say which user roles and which token
  scopes may call them.

Sessions (expiry, versions) are in ``sessions.py``, password checks, lockout
and rate limits in ``logins.py``, client addresses and single sign-on in
``proxies.py``.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import Callable, Collection
from typing import Any

from flask import Flask, Response, abort, flash, g, jsonify, redirect, request, session, url_for
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from moderation.storage import tokens, users
from moderation.storage.models import User
from moderation.web import logins, proxies, sessions
from moderation.web.services import services

log = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FAILED = "missing or invalid CSRF token; reload the page and try again"
CSP = (
    "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # Media and JSON are for this site's pages only, never embedded elsewhere.
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
EXPIRED = "Your session expired. Please log in again."
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def init_app(app: Flask) -> None:
    settings = app.extensions["moderation"].settings
    app.extensions["moderation.proxies"] = proxies.ProxyConfig.from_settings(settings)
    logins.init_app(app)
    sessions.configure(app, settings)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(logins.TooManyAttempts, _too_many_attempts)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.context_processor(lambda: {"csrf_token": csrf_token, "current_user": getattr(g, "user", None)})


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # Nothing but the static files may be cached: pages, JSON and media are private.
    if request.endpoint != "static" and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def _http_error(exc: HTTPException) -> Any:
    """Errors outside the blueprints' own handlers (unknown paths, 405s): JSON under /api/."""
    if request.path.startswith("/api/"):
        resp = jsonify(error=exc.description or exc.name)
        resp.status_code = exc.code or 500
        return resp
    return exc.get_response()


def _database_unavailable(exc: OperationalError) -> Response:
    """The database does not answer: a 503 that says so (and asks to retry),
    not a bare 500. The driver's message goes to the log only."""
    log.error("database unavailable: %s", str(exc.orig or exc).strip())
    message = "The database is not answering. Nothing was changed; please try again in a minute."
    if request.path.startswith("/api/"):
        resp = jsonify(error=message)
    else:
        resp = Response(f"<!doctype html><title>Unavailable</title><p>{message}</p>", mimetype="text/html")
    resp.status_code = 503
    resp.headers["Retry-After"] = "30"
    return resp


def _too_many_attempts(exc: logins.TooManyAttempts) -> Response:
    resp = jsonify(error=str(exc))
    resp.status_code = 429
    resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


def csrf_token() -> str:
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


def csrf_ok() -> bool:
    """Whether the request carries the session's CSRF token (form field or header)."""
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = session.get(CSRF_FIELD, "")
    return bool(expected) and hmac.compare_digest(sent.encode(), str(expected).encode())


def check_csrf() -> None:
    if not csrf_ok():
        abort(400, description=CSRF_FAILED)


def load_user(db: Session, allow_basic: bool) -> User | None:
    """The user of this request: single sign-on (header from a trusted proxy),
    the login session, or (API routes only: ``allow_basic``) a personal API
    token or HTTP Basic credentials. A Bearer header is authoritative there: a
    request with one is the token's user or nobody (``g.auth_refused`` says
    why). Raises ``logins.TooManyAttempts`` for Basic from an address over its limit."""
    if allow_basic:
        secret = _bearer_secret()
        if secret is not None:
            return _personal_token_user(db, secret)
    sso_name = proxies.sso_username()
    if sso_name is not None:
        return _sso_user(db, sso_name)
    user = sessions.session_user(db)
    if user is not None:
        return user
    auth = request.authorization
    if (
        allow_basic
        and auth is not None
        and auth.type == "basic"
        and auth.username
        and auth.password
        and "\x00" not in auth.username  # the database cannot compare NUL; no user has one
    ):
        g.basic_auth = True
        return logins.basic_login(db, auth.username, auth.password)
    return None


def _personal_token_user(db: Session, secret: str) -> User | None:
    """The user a personal token (scope ``review``) acts as: one indexed lookup,
    no password hashing. Service tokens are refused here (403): they have their
    own endpoints (``api_access``)."""
    token = tokens.authenticate(db, secret)
    if token is None:
        g.auth_refused = (401, "invalid or revoked API token")
        return None
    if db.dirty:
        db.commit()  # last_used_at, even if the request then fails
    if tokens.REVIEW not in token.scopes:
        g.auth_refused = (403, f"this token may not do this: it needs scope {tokens.REVIEW}")
        return None
    g.token, g.header_auth = token, True
    return tokens.token_user(db, token)


def _sso_user(db: Session, username: str) -> User | None:
    """The proxy vouches for ``username``: an active user of that name, or nobody
    (never a password session left in the cookie)."""
    user = users.active_user(db, username)
    if user is None:
        proxies.config().warn_once(f"user:{username}", "single sign-on: no active console user %r", username)
        session.pop(sessions.SSO_USER, None)
        return None
    if session.get(sessions.SSO_USER) != user.id:
        session.clear()  # a new person behind the proxy: nothing of the last session is kept
        session[sessions.SSO_USER] = user.id
        logins.sso_login(db, user)
    return user


def _json_error(message: str, status: int, challenge: str | None = None) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    if challenge is not None:
        resp.headers.add("WWW-Authenticate", 'Basic realm="moderation"')
        resp.headers.add("WWW-Authenticate", challenge)
    return resp


def _unauthenticated_api(challenge: str) -> Response:
    refused = g.get("auth_refused")
    if refused is not None:  # a Bearer token that is unknown, revoked or without the scope
        status, message = refused
        if status == 401:
            return _json_error(message, 401, 'Bearer realm="moderation", error="invalid_token"')
        return _json_error(message, status)
    message = EXPIRED if g.get("session_expired") else "authentication required"
    return _json_error(message, 401, challenge)


def login_required(
    api: bool = False, role: str | None = None, roles: Collection[str] | None = None
) -> Callable[..., Any]:
    """Open a database session as ``g.db``, load ``g.user``, enforce login and
    role (``role``: exactly that one; ``roles``: any of them).

    Console routes accept only the session cookie (or single sign-on), and their
    POSTs must carry the CSRF token. API routes also accept personal API tokens
    and HTTP Basic; such a POST must be JSON, which a cross-site form cannot
    send, so a browser that remembered the credentials cannot be made to decide items."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with services().sessions() as db:
                g.db = db
                g.user = load_user(db, allow_basic=api)
                if g.user is None:
                    if api:
                        return _unauthenticated_api('Bearer realm="moderation"')
                    if g.get("session_expired"):
                        flash(EXPIRED, "info")
                    # Back to a page after login; a form's target would answer GET with 405.
                    back = request.full_path.rstrip("?") if request.method == "GET" else None
                    return redirect(url_for("auth.login", next=back))
                if role is not None and g.user.role != role:
                    abort(403)
                if roles is not None and g.user.role not in roles:
                    allowed = ", ".join(sorted(str(r) for r in roles))
                    abort(403, description=f"this needs one of the roles {allowed}")
                if request.method not in SAFE_METHODS:
                    if not _header_auth():
                        check_csrf()
                    elif not request.is_json:
                        abort(
                            415, description="send Content-Type: application/json ({} when there is no body)"
                        )
                return view(*args, **kwargs)

        return inner

    return wrap


def _header_auth() -> bool:
    """Credentials in a header (HTTP Basic, a token), which no cross-site page can send."""
    return bool(getattr(g, "basic_auth", False) or getattr(g, "header_auth", False))


def _bearer_secret() -> str | None:
    """The secret of an ``Authorization: Bearer ...`` header, or None without one."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


def api_access(*, roles: Collection[str] = (), scopes: Collection[str] = ()) -> Callable[..., Any]:
    """Open a database session as ``g.db`` and let in users with one of ``roles``
    or API tokens with one of ``scopes``; everyone else gets a JSON 401 or 403.

    Sets ``g.user`` (None for a token), ``g.token`` (None for a user) and
    ``g.actor``, the audit-log name: the username, or ``token:<name>``.

    An ``Authorization: Bearer`` header is authoritative: the session cookie is
    then ignored, and an unknown or revoked token gets 401. Token and HTTP Basic
    requests carry no cookie a cross-site page could ride on, so they need no
    CSRF token, but their unsafe methods (POST, PATCH) must send JSON, which a
    cross-site form cannot. Cookie (and single sign-on) requests need the
    ``X-CSRF-Token`` header. A token's last use is committed before the view runs."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with services().sessions() as db:
                g.db = db
                g.user = g.token = None
                secret = _bearer_secret()
                if secret is not None:
                    token = tokens.authenticate(db, secret)
                    if token is None:
                        return _json_error(
                            "invalid or revoked API token",
                            401,
                            'Bearer realm="moderation", error="invalid_token"',
                        )
                    db.commit()  # last_used_at, even if the request then fails
                    g.token, g.actor = token, f"token:{token.name}"[:100]
                    if not set(scopes) & set(token.scopes):
                        needed = " or ".join(sorted(scopes)) or "a user login"
                        return _json_error(f"this token may not do this: it needs scope {needed}", 403)
                else:
                    user = load_user(db, allow_basic=True)
                    if user is None:
                        return _unauthenticated_api('Bearer realm="moderation"')
                    g.user, g.actor = user, user.username
                    if user.role not in roles:
                        allowed = " or ".join(sorted(roles)) or "an API token"
                        return _json_error(f"this needs the {allowed} role", 403)
                if request.method not in SAFE_METHODS:
                    if g.token is not None or _header_auth():
                        if not request.is_json:
                            return _json_error(
                                "send Content-Type: application/json ({} when there is no body)", 415
                            )
                    elif not csrf_ok():
                        return _json_error(CSRF_FAILED, 400)
                return view(*args, **kwargs)

        return inner

    return wrap
