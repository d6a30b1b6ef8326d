"""JSON API under /api/v1 (OpenAPI document at /api/v1/openapi.json).

Authenticate with the console's session cookie (plus the X-CSRF-Token header on
POST) or with HTTP Basic credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from moderation.domain import REVIEW_ROLES
from moderation.review import REASONS, ReviewError
from moderation.storage import queue
from moderation.web import actions
from moderation.web.banks_api import is_unicode_text
from moderation.web.presenters import item_dict
from moderation.web.security import login_required

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
    return jsonify(reasons=[{"code": k, "label": v} for k, v in REASONS.items()])


@bp.get("/queue")
@login_required(api=True)
def queue_stats() -> Any:
    rows = queue.queue_depth(g.db)
    return jsonify(depth=[{"state": s, "tier": t, "priority": p, "count": c} for s, t, p, c in rows])


@bp.post("/queue/claim")
@login_required(api=True, roles=REVIEW_ROLES)
def claim() -> Any:
    item = actions.claim_next()
    if item is None:
        return ("", 204)
    return jsonify(item_dict(item))


@bp.get("/items/<int:item_id>")
@login_required(api=True, roles=REVIEW_ROLES)
def get_item(item_id: int) -> Any:
    return jsonify(item_dict(actions.visible_item(item_id)))


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
    item = actions.visible_item(item_id, for_update=True)
    try:
        result = actions.decide(item, fields["action"], fields["reason"], fields["note"][:2000])
    except ReviewError as exc:
        return jsonify(error=str(exc)), exc.status
    payload = dict(result.decision.payload)
    payload["banked_hashes"] = result.banked
    return jsonify(payload), 201


@bp.post("/items/<int:item_id>/release")
@login_required(api=True, roles=REVIEW_ROLES)
def release(item_id: int) -> Any:
    actions.release(actions.visible_item(item_id, for_update=True))
    return ("", 204)
