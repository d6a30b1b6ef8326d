"""The moderator's review console (server-rendered pages)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for

from moderation import policy, text_limits
from moderation.domain import REVIEW_ROLES
from moderation.review import FIRST_REVIEW, ReviewError
from moderation.storage import appeals, audit, queue
from moderation.web import actions, media_links
from moderation.web import groups as group_views
from moderation.web.presenters import item_dict
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("console", __name__)


@bp.app_context_processor
def _text_limits() -> dict[str, int]:
    """The limits of moderation/text_limits.py, for the forms' ``maxlength``."""
    return {"note_limit": text_limits.NOTE, "id_limit": text_limits.ID, "reason_limit": text_limits.REASON}


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
    try:
        item = actions.claim_next()
    except actions.BreakDue:
        return redirect(url_for("wellbeing.break_page"))
    if item is None:
        flash("The queue is empty. Nice work.", "info")
        return redirect(url_for("console.index"))
    return redirect(url_for("console.item", item_id=item.id))


@bp.get("/items/<int:item_id>")
@login_required(roles=REVIEW_ROLES)
def item(item_id: int) -> Any:
    return _item_page(actions.view_item(item_id))


def _item_page(found: Any, form: Any = None, status: int = 200) -> Any:
    """The item page; ``form``: a refused decision's fields, filled in again."""
    html = render_template(
        "item.html",
        item=item_dict(found),
        reasons=policy.reasons(services().settings.policy_reasons),
        appeal=appeals.appeal_view(g.db, found),
        can_decide=queue.holds_live_claim(found, g.user),
        form=form or {},
    )
    return html, status


@bp.get("/items/<int:item_id>/media")
@login_required(roles=REVIEW_ROLES)
def media(item_id: int) -> Any:
    media_links.require_valid_link(item_id)  # the page's short-lived link, issued to this user
    return actions.media_response(actions.visible_item(item_id))


@bp.get("/items/<int:item_id>/media-link")
@login_required(roles=REVIEW_ROLES)
def media_link(item_id: int) -> Any:
    """A fresh signed media link, for a page left open past the last one's lifetime."""
    found = actions.visible_item(item_id)
    return jsonify(url=media_links.media_url(found.id))


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
        text_limits.check("note", request.form.get("note", ""), text_limits.NOTE)
    except text_limits.TextTooLong as exc:
        # The page again, with what the moderator wrote: the claim is kept, nothing is lost.
        flash(f"Nothing decided: {exc}. Shorten the note and decide again.", "error")
        return _item_page(found, form=request.form, status=400)
    if request.form.get("apply_to_group") == "1":  # one decision for its near-duplicates too
        if not group_views.decide_whole_group(found):
            return redirect(url_for("console.item", item_id=item_id))
        return _claim_and_show()
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
    if result.published is not None:
        flash(f"Item {item_id}: {result.decision.action} ({result.decision.reason}).", "info")
    elif result.outcome == FIRST_REVIEW:
        flash(f"Item {item_id}: removal recorded; it waits for a second reviewer (four eyes).", "info")
    else:
        flash(f"Item {item_id}: you disagree with the first review; a senior will decide it.", "info")
    # Straight on to the next item: one key press per routine decision.
    return _claim_and_show()


@bp.post("/items/<int:item_id>/release")
@login_required(roles=REVIEW_ROLES)
def release(item_id: int) -> Any:
    actions.release(actions.visible_item(item_id, for_update=True))
    flash(f"Item {item_id} skipped: back in the queue for others, not served to you again.", "info")
    return redirect(url_for("console.index"))


@bp.post("/items/<int:item_id>/lease")
@login_required(roles=REVIEW_ROLES)
def lease(item_id: int) -> Any:
    """Renew the caller's claim while the item page is open (static/lease.js)."""
    return jsonify(lease_expires_at=actions.renew_lease(item_id))
