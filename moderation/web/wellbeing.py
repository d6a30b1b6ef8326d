"""Moderator wellbeing: display preferences, exposure reports and breaks.

- ``/preferences``: how media is shown (reveal by click or by hold, greyscale
  after reveal, blur strength). Unset preferences take ``DEFAULTS``: blurred,
  greyscale, reveal by click, full colour once revealed.
- ``/exposure``: the item page reports seconds of revealed media here
  (``storage.exposure`` counts them and the items viewed).
- ``/break``: once a threshold is reached the console serves no more items
  (``actions.BreakDue``) until the moderator acknowledges a break here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for

from moderation.domain import REVIEW_ROLES
from moderation.storage import audit, exposure
from moderation.storage.models import Item, User, utcnow
from moderation.web import actions, media_links
from moderation.web.security import CSRF_FIELD, login_required

bp = Blueprint("wellbeing", __name__)

DEFAULTS: dict[str, Any] = {
    "reveal_mode": "click",
    "greyscale_after_reveal": False,
    "blur_strength": "medium",
}
CHOICES: dict[str, tuple[Any, ...]] = {
    "reveal_mode": ("click", "hold"),
    "greyscale_after_reveal": (True, False),
    "blur_strength": ("low", "medium", "high"),
}
PREFERENCES_UPDATE = "preferences.update"
# A report may arrive just after the decision that ended the claim: it still
# counts for an item the user opened this recently.
RECENT_VIEW = timedelta(minutes=10)


class PreferenceError(ValueError):
    """An unknown preference or a value it does not take (400)."""


def effective_preferences(stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """``DEFAULTS`` overlaid with the stored values that are still valid."""
    prefs = dict(DEFAULTS)
    for key, value in (stored or {}).items():
        if key in CHOICES and value in CHOICES[key] and type(value) is type(DEFAULTS[key]):
            prefs[key] = value
    return prefs


def parse_preferences(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Submitted fields (form strings or JSON values) -> typed preferences."""
    if not fields:
        raise PreferenceError(f"send at least one preference: {', '.join(CHOICES)}")
    parsed: dict[str, Any] = {}
    for key, raw in fields.items():
        if key not in CHOICES:
            raise PreferenceError(f"unknown preference {key!r}; the preferences are {', '.join(CHOICES)}")
        parsed[key] = _coerce(key, raw)
    return parsed


def _coerce(key: str, raw: Any) -> Any:
    if isinstance(DEFAULTS[key], bool):
        value = {"true": True, "false": False}.get(raw, raw) if isinstance(raw, str) else raw
        if value is True or value is False:
            return value
        raise PreferenceError(f"{key} must be true or false, not {raw!r}")
    if isinstance(raw, str) and raw in CHOICES[key]:
        return raw
    raise PreferenceError(f"{key} must be one of {', '.join(CHOICES[key])}, not {raw!r}")


def user_preferences(user: User | None) -> dict[str, Any]:
    return effective_preferences(user.preferences if user is not None else None)


@bp.app_context_processor
def _template_helpers() -> dict[str, Any]:
    return {
        "viewer_prefs": lambda: user_preferences(getattr(g, "user", None)),
        "signed_media_url": media_links.media_url,
    }


# -- preferences -----------------------------------------------------------------------------
@bp.get("/preferences")
@login_required()
def preferences() -> Any:
    return render_template("preferences.html", prefs=user_preferences(g.user), choices=CHOICES)


@bp.post("/preferences")
@login_required()
def update_preferences() -> Any:
    body = request.get_json(silent=True) if request.is_json else None
    if request.is_json and not isinstance(body, dict):
        return jsonify(error="send a JSON object of preferences"), 400
    fields = body if body is not None else {k: v for k, v in request.form.items() if k != CSRF_FIELD}
    try:
        changes = parse_preferences(fields)
    except PreferenceError as exc:
        if request.is_json:
            return jsonify(error=str(exc)), 400
        flash(str(exc), "error")
        page = render_template("preferences.html", prefs=user_preferences(g.user), choices=CHOICES)
        return page, 400
    # A new dict, so that the JSON column is seen as changed.
    g.user.preferences = {**(g.user.preferences or {}), **changes}
    audit.record(g.db, g.user.username, PREFERENCES_UPDATE, None, **changes)
    g.db.commit()
    if request.is_json:
        return jsonify(preferences=user_preferences(g.user))
    flash("Preferences saved.", "info")
    return redirect(url_for("wellbeing.preferences"))


# -- exposure --------------------------------------------------------------------------------
@bp.post("/exposure")
@login_required(roles=REVIEW_ROLES)
def report_exposure() -> Any:
    """Seconds of revealed media on an item page (form or JSON: item_id, seconds).

    Answers ``{"counted": seconds, "break_due": bool}``; a report about an item
    the user may not see, and has not opened lately, counts 0."""
    body = request.get_json(silent=True) if request.is_json else request.form
    if not isinstance(body, Mapping):
        return jsonify(error="send item_id and seconds"), 400
    item_id, seconds = _number(body.get("item_id")), _number(body.get("seconds"))
    if item_id is None or seconds is None or not item_id.is_integer() or not 0 < item_id < 2**63:
        return jsonify(error="item_id must be an item id and seconds a number"), 400
    item = g.db.get(Item, int(item_id))
    current = exposure.current(g.db, g.user)
    counted = 0.0
    if item is not None and (
        actions.may_see(item) or exposure.viewed_since(g.db, g.user, item.id, utcnow() - RECENT_VIEW)
    ):
        counted = exposure.record_revealed(current, seconds)
    due = exposure.break_due(actions.exposure_limits(), current)
    g.db.commit()
    return jsonify(counted=round(counted, 3), break_due=due)


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# -- breaks ----------------------------------------------------------------------------------
@bp.get("/break")
@login_required()
def break_page() -> Any:
    current = exposure.current(g.db, g.user)
    due = exposure.break_due(actions.exposure_limits(), current)
    if due:
        exposure.mark_prompted(g.db, g.user, current)
    g.db.commit()
    return render_template(
        "break.html",
        due=due,
        items=current.items_viewed,
        minutes=round((current.revealed_seconds or 0.0) / 60, 1),
    )


@bp.post("/break")
@login_required()
def take_break() -> Any:
    exposure.take_break(g.db, g.user)
    g.db.commit()
    flash("Welcome back. Your exposure counts start again from zero.", "info")
    return redirect(url_for("console.index"))
