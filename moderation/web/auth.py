"""Login and logout for the review console."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from moderation.storage import audit, users
from moderation.web.security import check_csrf
from moderation.web.services import services

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    # Only same-site paths: never bounce a moderator to another host after login.
    if target and target.startswith("/") and not target.startswith("//") and not urlparse(target).netloc:
        return target
    return url_for("console.index")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        check_csrf()
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        with services().sessions() as db:
            user = users.authenticate(db, username, password)
            audit.record(db, username[:100] or "(blank)", "login" if user else "login.failed")
            db.commit()
            if user is not None:
                session.clear()  # a fresh session on login: no fixation
                session["user_id"] = user.id
                return redirect(_safe_next(request.args.get("next")))
        flash("Wrong username or password.", "error")
        return render_template("login.html"), 401
    return render_template("login.html")


@bp.post("/logout")
def logout() -> Any:
    check_csrf()
    session.clear()
    return redirect(url_for("auth.login"))
