"""Evidence pages: the list of preserved cases, one case with its chain of
custody, legal holds and exports.

Admins and auditors read; only admins set or release a legal hold and export.
No page shows the media: it leaves the service only inside an export bundle.
Export is a POST with the CSRF token, because it writes decrypted media to the
admin's disk: a link on another site must not be able to start one.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, Response, abort, flash, g, redirect, render_template, request, url_for

from moderation import evidence_crypto
from moderation.domain import AUDIT_ROLES
from moderation.errors import NotFound, RequestError
from moderation.storage import audit, evidence
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("evidence", __name__, url_prefix="/evidence")

PAGE = 50
FILTERS = {"": "All", "held": "Legal hold", "expiring": "Expiring soon", "purged": "Purged"}


def init_app(app: Flask) -> None:
    """Check the evidence key now, so a bad EVIDENCE_KEY stops start-up instead
    of failing the first removal; then serve the pages."""
    evidence_crypto.check_key(app.extensions["moderation"].settings)
    app.register_blueprint(bp)


def _not_found(exc: NotFound) -> Any:
    abort(404, description=str(exc))


@bp.get("")
@login_required(roles=AUDIT_ROLES)
def case_list() -> Any:
    show = request.args.get("show", "")
    show = show if show in FILTERS else ""
    try:
        before_id: int | None = int(request.args.get("before_id", ""))
    except ValueError:
        before_id = None
    found = evidence.list_cases(g.db, show, before_id, PAGE + 1)
    cases = found[:PAGE]
    audit.record(g.db, g.user.username, "evidence.list", None, show=show)
    g.db.commit()
    return render_template(
        "evidence_list.html",
        cases=cases,
        show=show,
        filters=FILTERS,
        next_before_id=cases[-1].item_id if len(found) > PAGE else None,
        paged=before_id is not None,
        expiring_days=evidence.EXPIRING_DAYS,
    )


@bp.get("/<int:item_id>")
@login_required(roles=AUDIT_ROLES)
def case(item_id: int) -> Any:
    try:
        opened = evidence.open_case(g.db, item_id, g.user.username)
    except NotFound as exc:
        return _not_found(exc)
    g.db.commit()
    return render_template(
        "evidence_case.html",
        ev=opened.evidence,
        manifest=opened.evidence.manifest,
        manifest_json=json.dumps(opened.evidence.manifest, indent=2, sort_keys=True, ensure_ascii=False),
        records=opened.records,
        check=opened.check,
    )


@bp.post("/<int:item_id>/hold")
@login_required(role="admin")
def hold(item_id: int) -> Any:
    wanted = request.form.get("legal_hold", "")
    if wanted not in ("on", "off"):
        abort(400, description="legal_hold must be on or off")
    try:
        evidence.set_hold(g.db, item_id, wanted == "on", request.form.get("reason", ""), g.user.username)
        g.db.commit()
    except NotFound as exc:
        return _not_found(exc)
    except RequestError as exc:
        g.db.rollback()
        flash(str(exc), "error")
    else:
        flash(f"Legal hold on item {item_id} {'set' if wanted == 'on' else 'released'}.", "info")
    return redirect(url_for("evidence.case", item_id=item_id))


@bp.post("/<int:item_id>/export")
@login_required(role="admin")
def export(item_id: int) -> Any:
    try:
        bundle = evidence.export_case(g.db, item_id, g.user.username, services().settings)
    except RequestError as exc:  # no such case (404), or its ciphertext does not decrypt (409)
        g.db.rollback()
        abort(exc.status, description=str(exc))
    g.db.commit()
    resp = Response(bundle.data, mimetype="application/zip")
    resp.headers["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
    resp.headers["Cache-Control"] = "no-store, private"
    resp.headers["X-Bundle-SHA256"] = bundle.sha256
    return resp
