"""Admin page of the outbox rows the broker refused for good (storage/set_aside.py):
set-aside decisions and dead letters with the broker's reason and their size,
and the form to retry one (as it is, or a decision with its note shortened) or
discard it. Admin only; every POST carries the CSRF token (``login_required``)
and every change is audited with it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from moderation.errors import RequestError
from moderation.storage import set_aside
from moderation.web.security import login_required

bp = Blueprint("outbox_admin", __name__, url_prefix="/admin")

VERBS = ("retry", "shorten", "discard")


@bp.get("/outbox")
@login_required(role="admin")
def page() -> Any:
    rows = set_aside.list_rows(g.db)
    return render_template(
        "admin_outbox.html",
        decisions=[r for r in rows if r.outbox == "decisions"],
        dead_letters=[r for r in rows if r.outbox == "dead_letters"],
    )


@bp.post("/outbox/<outbox>/<int:row_id>")
@login_required(role="admin")
def change(outbox: str, row_id: int) -> Any:
    """Form field ``verb``: retry, shorten (decisions: the note cut to the limit,
    then retried) or discard. A refused change is flashed; nothing of it is kept."""
    verb = request.form.get("verb", "")
    try:
        if verb == "retry":
            message = set_aside.retry(g.db, outbox, row_id, g.user.username)
        elif verb == "shorten" and outbox == "decisions":
            message = set_aside.shorten_note(g.db, row_id, g.user.username)
        elif verb == "discard":
            message = set_aside.discard(g.db, outbox, row_id, g.user.username)
        else:
            raise RequestError(
                f"unknown action {verb[:40]!r} for {outbox[:40]!r}: use one of {', '.join(VERBS)}"
            )
        g.db.commit()
    except RequestError as exc:
        g.db.rollback()
        flash(str(exc), "error")
    else:
        flash(message, "info")
    return redirect(url_for("outbox_admin.page"))
