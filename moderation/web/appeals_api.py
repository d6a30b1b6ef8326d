"""Appeals API under /api/v1/appeals: the platform reopens a decided item.

Callers: an API token with scope ``appeals:submit`` (the platform's appeal
service), or an admin. The body is the appeal event's JSON (docs/events.md);
the same ``appeal_id`` again answers 200 with the appeal as first recorded and
changes nothing. 404: no such item or content; 409: the item is not decided
(still in review, escalated, or already under appeal).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify

from moderation.storage import appeals
from moderation.storage.models import Item
from moderation.web.banks_api import json_object, register_json_errors, reject_nul_characters, reject_unknown
from moderation.web.security import api_access
from moderation.web.services import services

bp = Blueprint("appeals_api", __name__, url_prefix="/api/v1")
register_json_errors(bp)
bp.before_request(reject_nul_characters)

SUBMIT: dict[str, Any] = {"roles": ("admin",), "scopes": ("appeals:submit",)}


@bp.post("/appeals")
@api_access(**SUBMIT)
def submit_appeal() -> Any:
    body = json_object()
    reject_unknown(body, appeals.FIELDS)
    request = appeals.parse_request(body)
    svc = services()
    result = appeals.submit(g.db, svc.settings, request, source="api", actor=g.actor)
    g.db.commit()
    svc.metrics.appeals.labels("api", "reopened" if result.created else "duplicate").inc()
    item = g.db.get(Item, result.appeal.item_id)
    assert item is not None  # appeals reference items (foreign key)
    return jsonify(appeals.appeal_dict(result.appeal, item, result.created)), 201 if result.created else 200
