"""The moderator's review console (server-rendered pages)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from moderation.domain import REVIEW_ROLES
from moderation.review import REASONS, ReviewError
from moderation.storage import audit, queue
from moderation.web import actions
from moderation.web.presenters import item_dict
from moderation.web.security import login_required

bp = Blueprint("console", __name__)


@bp.get("/")
@login_required()
def index() -> Any:
    depth = queue.queue_depth(g.db)
    totals: dict[str, int] = {}
    for state, tier, _priority, count in depth:
        key = "escalated" if tier in ("senior", "restricted") else state
        totals[key] = totals.get(key, 0) + count
    held = queue.current_claim(g.db, g.user)
    return render_template("index.html", totals=totals, held=held)


@bp.post("/next")
@login_required(roles=REVIEW_ROLES)
def next_item() -> Any:
    return _claim_and_show()


def _claim_and_show() -> Any:
    item = actions.claim_next()
    if item is None:
        flash("The queue is empty. Nice work.", "info")
        return redirect(url_for("console.index"))
    return redirect(url_for("console.item", item_id=item.id))


@bp.get("/items/<int:item_id>")
@login_required(roles=REVIEW_ROLES)
def item(item_id: int) -> Any:
    found = actions.visible_item(item_id)
    audit.record(g.db, g.user.username, "item.view", found.id)
    g.db.commit()
    return render_template(
        "item.html", item=item_dict(found), reasons=REASONS, can_decide=queue.holds_live_claim(found, g.user)
    )


@bp.get("/items/<int:item_id>/media")
@login_required(roles=REVIEW_ROLES)
def media(item_id: int) -> Any:
    return actions.media_response(actions.visible_item(item_id))


@bp.post("/items/<int:item_id>/reveal")
@login_required(roles=REVIEW_ROLES)
def reveal(item_id: int) -> Any:
    found = actions.visible_item(item_id)
    audit.record(g.db, g.user.username, "item.reveal", found.id)
    g.db.commit()
    return ("", 204)


@bp.post("/items/<int:item_id>/decide")
@login_required(roles=REVIEW_ROLES)
def decide(item_id: int) -> Any:
    found = actions.visible_item(item_id, for_update=True)
    try:
        result = actions.decide(
            found,
            request.form.get("action", ""),
            request.form.get("reason", ""),
            request.form.get("note", ""),
        )
    except ReviewError as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.item", item_id=item_id))
    flash(f"Item {item_id}: {result.decision.action} ({result.decision.reason}).", "info")
    # Straight on to the next item: one key press per routine decision.
    return _claim_and_show()


@bp.post("/items/<int:item_id>/release")
@login_required(roles=REVIEW_ROLES)
def release(item_id: int) -> Any:
    actions.release(actions.visible_item(item_id, for_update=True))
    flash(f"Item {item_id} returned to the queue.", "info")
    return redirect(url_for("console.index"))
