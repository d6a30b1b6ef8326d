"""Authentication helpers, CSRF tokens and security headers."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import Flask, abort, g, jsonify, redirect, request, session, url_for
from sqlalchemy.orm import Session

from moderation.storage import users
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
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
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
    if allow_basic and auth is not None and auth.type == "basic" and auth.username and auth.password:
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
