"""Authentication helpers, CSRF tokens and security headers.

Two decorators guard views:

- ``login_required``: the review console and the queue API (session cookie, and
  HTTP Basic on API routes).
- ``api_access``: bank and submission API routes, which also accept API tokens
  (``Authorization: Bearer mod_...``) and say which user roles and which token
  scopes may call them.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable, Collection
from typing import Any

from flask import Flask, Response, abort, g, jsonify, redirect, request, session, url_for
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from moderation.storage import tokens, users
from moderation.storage.models import User
from moderation.web.services import services

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def init_app(app: Flask) -> None:
    app.after_request(_security_headers)
    app.context_processor(lambda: {"csrf_token": csrf_token, "current_user": getattr(g, "user", None)})


def _security_headers(response: Any) -> Any:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def csrf_token() -> str:
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return str(session[CSRF_FIELD])


def check_csrf() -> None:
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    expected = session.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(sent, expected):
        abort(400, description="missing or invalid CSRF token; reload the page and try again")


def load_user(db: Session, allow_basic: bool) -> User | None:
    """The session's user, or (API routes only) HTTP Basic credentials."""
    user_id = session.get("user_id")
    if user_id is not None:
        user = db.get(User, user_id)
        if user is not None and user.active:
            return user
        session.clear()
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
        return users.authenticate(db, auth.username, auth.password)
    return None


def login_required(api: bool = False, role: str | None = None) -> Callable[..., Any]:
    """Open a database session as ``g.db``, load ``g.user``, enforce login and role.

    Console routes accept only the session cookie, and their POSTs must carry the
    CSRF token. API routes also accept HTTP Basic; a Basic-authenticated POST must
    be JSON, which a cross-site form cannot send, so a browser that remembered the
    credentials cannot be made to decide items."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with services().sessions() as db:
                g.db = db
                g.user = load_user(db, allow_basic=api)
                if g.user is None:
                    if api:
                        resp = jsonify(error="authentication required")
                        resp.status_code = 401
                        resp.headers["WWW-Authenticate"] = 'Basic realm="moderation"'
                        return resp
                    return redirect(url_for("auth.login", next=request.path))
                if role is not None and g.user.role != role:
                    abort(403)
                if request.method == "POST":
                    if not getattr(g, "basic_auth", False):
                        check_csrf()
                    elif not request.is_json:
                        abort(
                            415, description="send Content-Type: application/json ({} when there is no body)"
                        )
                return view(*args, **kwargs)

        return inner

    return wrap


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _bearer_secret() -> str | None:
    """The secret of an ``Authorization: Bearer ...`` header, or None without one."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


def _json_error(message: str, status: int, challenge: str | None = None) -> Response:
    resp = jsonify(error=message)
    resp.status_code = status
    if challenge is not None:
        resp.headers.add("WWW-Authenticate", 'Basic realm="moderation"')
        resp.headers.add("WWW-Authenticate", challenge)
    return resp


def api_access(*, roles: Collection[str] = (), scopes: Collection[str] = ()) -> Callable[..., Any]:
    """Open a database session as ``g.db`` and let in users with one of ``roles``
    or API tokens with one of ``scopes``; everyone else gets a JSON 401 or 403.

    Sets ``g.user`` (None for a token), ``g.token`` (None for a user) and
    ``g.actor``, the audit-log name: the username, or ``token:<name>``.

    An ``Authorization: Bearer`` header is authoritative: the session cookie is
    then ignored, and an unknown or revoked token gets 401. Token and HTTP Basic
    requests carry no cookie a cross-site page could ride on, so they need no
    CSRF token, but their unsafe methods (POST, PATCH) must send JSON, which a
    cross-site form cannot. Cookie requests need the ``X-CSRF-Token`` header.
    A token's last use is committed before the view runs."""

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
                        return _json_error("authentication required", 401, 'Bearer realm="moderation"')
                    g.user, g.actor = user, user.username
                    if user.role not in roles:
                        allowed = " or ".join(sorted(roles)) or "an API token"
                        return _json_error(f"this needs the {allowed} role", 403)
                if request.method not in SAFE_METHODS:
                    if g.token is not None or getattr(g, "basic_auth", False):
                        if not request.is_json:
                            return _json_error(
                                "send Content-Type: application/json ({} when there is no body)", 415
                            )
                    else:
                        try:
                            check_csrf()
                        except HTTPException as exc:
                            return _json_error(exc.description or "bad CSRF token", 400)
                return view(*args, **kwargs)

        return inner

    return wrap
