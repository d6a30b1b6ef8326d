"""JSON API under /api/v1 (OpenAPI document at /api/v1/openapi.json).

Authenticate with the console's session cookie (plus the X-CSRF-Token header on
POST) or with HTTP Basic credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from moderation import policy, text_limits
from moderation.domain import REVIEW_ROLES, Role
from moderation.review import ReviewError
from moderation.storage import exposure, queue, queue_views
from moderation.storage.db import is_unicode_text
from moderation.web import actions
from moderation.web import groups as group_views
from moderation.web.presenters import item_dict
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("api", __name__, url_prefix="/api/v1")
OPENAPI_PATH = Path(__file__).with_name("openapi.json")


@bp.errorhandler(HTTPException)
def _json_errors(exc: HTTPException) -> tuple[Response, int]:
    return jsonify(error=exc.description or exc.name), exc.code or 500


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(OPENAPI_PATH.read_text(), mimetype="application/json")


@bp.get("/me")
@login_required(api=True)
def me() -> Any:
    return jsonify(username=g.user.username, role=g.user.role)


@bp.get("/reasons")
@login_required(api=True)
def reasons() -> Any:
    configured = policy.reasons(services().settings.policy_reasons)
    return jsonify(reasons=[{"code": k, "label": v} for k, v in configured.items()])


@bp.get("/queue")
@login_required(api=True)
def queue_stats() -> Any:
    rows = queue.queue_depth(g.db)
    counts = queue_views.view_counts(g.db, include_restricted=g.user.role == Role.ADMIN)
    return jsonify(
        depth=[{"state": s, "tier": t, "priority": p, "count": c} for s, t, p, c in rows], counts=counts
    )


@bp.post("/queue/claim")
@login_required(api=True, roles=REVIEW_ROLES)
def claim() -> Any:
    try:
        item = actions.claim_next()
    except actions.BreakDue as due:
        return jsonify(
            error="break due: take a break, then acknowledge it (POST /api/v1/break or the console's /break)",
            break_due=True,
            items_viewed=due.session.items_viewed,
            revealed_seconds=round(due.session.revealed_seconds or 0.0, 1),
        ), 409
    if item is None:
        return ("", 204)
    return jsonify(item_dict(item))


@bp.get("/exposure")
@login_required(api=True, roles=REVIEW_ROLES)
def get_exposure() -> Any:
    """The caller's exposure since their last break, and whether a break is due."""
    current = exposure.current(g.db, g.user)
    due = exposure.break_due(actions.exposure_limits(), current)
    g.db.commit()
    return jsonify(**exposure.summary(current), break_due=due)


@bp.post("/break")
@login_required(api=True, roles=REVIEW_ROLES)
def take_break() -> Any:
    """Acknowledge a break (as the console's /break does): the counts start again."""
    fresh = exposure.take_break(g.db, g.user)
    g.db.commit()
    return jsonify(**exposure.summary(fresh), break_due=False)


@bp.get("/items/<int:item_id>")
@login_required(api=True, roles=REVIEW_ROLES)
def get_item(item_id: int) -> Any:
    # Viewed through the API is viewed: counted for breaks and audited like a page view.
    return jsonify(item_dict(actions.view_item(item_id, via="api")))


@bp.get("/items/<int:item_id>/media")
@login_required(api=True, roles=REVIEW_ROLES)
def get_media(item_id: int) -> Any:
    return actions.media_response(actions.visible_item(item_id))


@bp.post("/items/<int:item_id>/decision")
@login_required(api=True, roles=REVIEW_ROLES)
def post_decision(item_id: int) -> Any:
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error='send a JSON object: {"action": ..., "reason": ..., "note": ...}'), 400
    fields = {}
    for key in ("action", "reason", "note"):
        value = body.get(key, "")
        if not isinstance(value, str) or "\x00" in value or not is_unicode_text(value):
            return jsonify(error=f"{key} must be a string of valid Unicode text"), 400
        fields[key] = value
    try:
        note = text_limits.check("note", fields["note"], text_limits.NOTE)
    except text_limits.TextTooLong as exc:
        return jsonify(error=str(exc)), 400
    apply_to_group = body.get("apply_to_group", False)
    if not isinstance(apply_to_group, bool):
        return jsonify(error="apply_to_group must be true or false"), 400
    item = actions.visible_item(item_id, for_update=True)
    if apply_to_group:  # its open near-duplicates too (web/groups.py)
        return group_views.api_decision(item, fields["action"], fields["reason"], note)
    try:
        result = actions.decide(item, fields["action"], fields["reason"], note)
    except ReviewError as exc:
        return jsonify(error=str(exc)), exc.status
    if result.published is None:  # four eyes: held for a second review, or sent to seniors
        return jsonify(outcome=result.outcome, item_id=item.id, state=item.state, tier=item.tier), 202
    payload = dict(result.decision.payload)
    payload["banked_hashes"] = result.banked
    return jsonify(payload), 201


@bp.post("/items/<int:item_id>/release")
@login_required(api=True, roles=REVIEW_ROLES)
def release(item_id: int) -> Any:
    actions.release(actions.visible_item(item_id, for_update=True))
    return ("", 204)


@bp.post("/items/<int:item_id>/lease")
@login_required(api=True, roles=REVIEW_ROLES)
def renew_lease(item_id: int) -> Any:
    return jsonify(lease_expires_at=actions.renew_lease(item_id))
