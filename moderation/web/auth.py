"""Login and logout for the review console.

One message for every failed login (unknown user, wrong password, locked
account), so the form does not tell which usernames exist; 429 with
``Retry-After`` when the client address is over ``LOGIN_ATTEMPTS_PER_MINUTE``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from moderation.storage import audit
from moderation.storage.models import User
from moderation.web import logins, proxies, sessions
from moderation.web.security import check_csrf, load_user
from moderation.web.services import services

bp = Blueprint("auth", __name__)

FAILED = "Wrong username or password, or the account is locked after too many failed attempts."


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never bounce a moderator to another host after login.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not urlparse(target).netloc
    ):
        return target
    return url_for("console.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if proxies.sso_username() is not None:  # signed on at the proxy: nothing to type
            with services().sessions() as db:
                if load_user(db, allow_basic=False) is not None:
                    return redirect(_safe_next(request.args.get("next")))
        return render_template("login.html")
    check_csrf()
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    with services().sessions() as db:
        try:
            user = logins.form_login(db, username, password)
        except logins.TooManyAttempts as exc:
            flash(f"Too many login attempts. Try again in {exc.retry_after} seconds.", "error")
            return render_template("login.html"), 429, {"Retry-After": str(exc.retry_after)}
    if user is None:
        flash(FAILED, "error")
        return render_template("login.html"), 401
    sessions.begin(session, user)  # a fresh session on login: no fixation
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> Any:
    check_csrf()
    user_id = session.get(sessions.USER_ID) or session.get(sessions.SSO_USER)
    if isinstance(user_id, int):
        with services().sessions() as db:
            user = db.get(User, user_id)
            if user is not None:
                # The cookie is signed, not stored: a new session version is what
                # makes a copy of it useless (and ends the user's other sessions too).
                user.session_version += 1
                audit.record_auth(db, user.username, audit.LOGOUT, proxies.client_address())
                db.commit()
    sessions.end()
    return redirect(url_for("auth.login"))
