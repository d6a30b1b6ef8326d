"""Personal API tokens: each console user creates and revokes their own.

A personal token has the scope ``review`` and acts as its user, with the user's
role, on the queue API (claim, read, decide), at the cost of one indexed
lookup per request instead of a password check. Its secret is shown once, on
the page that created it; only its SHA-256 is stored. A new password or a
deactivation revokes the user's tokens (storage/users.py). Admins create them
for a user from the shell: ``moderation token create NAME --user NAME --scope review``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from moderation.errors import RequestError
from moderation.storage import tokens
from moderation.web.security import login_required

bp = Blueprint("personal_tokens", __name__)
MAX_LABEL = 40


def token_name(username: str, label: str) -> str:
    """Token names are unique across users: the owner's name, then the label."""
    return f"{username}/{label}"


def _page(new_secret: str | None = None, new_name: str = "", status: int = 200) -> Any:
    html = render_template(
        "tokens.html",
        tokens=tokens.list_tokens(g.db, user_id=g.user.id),
        new_secret=new_secret,
        new_name=new_name,
        max_label=MAX_LABEL,
        max_tokens=tokens.MAX_PERSONAL_TOKENS,
    )
    # The secret is on this page once: keep it out of caches and history.
    return html, status, {"Cache-Control": "no-store, private"}


@bp.get("/tokens")
@login_required()
def token_page() -> Any:
    return _page()


@bp.post("/tokens")
@login_required()
def create_token() -> Any:
    label = request.form.get("label", "").strip()
    try:
        if not label or len(label) > MAX_LABEL or not label.isprintable() or "/" in label:
            raise RequestError(f"name the token: 1-{MAX_LABEL} printable characters, no '/'")
        name = token_name(g.user.username, label)
        secret = tokens.create_token(g.db, name, [tokens.REVIEW], created_by=g.user.username, user=g.user)
        g.db.commit()
    except (RequestError, IntegrityError) as exc:
        g.db.rollback()
        message = str(exc) if isinstance(exc, RequestError) else f"you have a token named {label!r} already"
        flash(message, "error")
        return redirect(url_for("personal_tokens.token_page"))
    return _page(new_secret=secret, new_name=name)


@bp.post("/tokens/<int:token_id>/revoke")
@login_required()
def revoke_token(token_id: int) -> Any:
    try:
        token = tokens.revoke_own_token(g.db, g.user, token_id)
    except RequestError as exc:  # NotFound: not one of yours, or no such token
        flash(str(exc), "error")
        return redirect(url_for("personal_tokens.token_page"))
    g.db.commit()
    flash(f"Token {token.name} revoked: it no longer works.", "info")
    return redirect(url_for("personal_tokens.token_page"))
