"""The audit log for admins and auditors: a filterable page and a CSV export.

Both are read-only GETs (``console_audit``: admin and auditor). The export is
itself audited (``audit.export`` with its filters) and stops at the newest
record that existed when it was asked for, so it is a fixed snapshot even
while the log grows. CSV cells that a spreadsheet would run as a formula are
neutralised with a leading apostrophe.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, g, render_template, request

from moderation.domain import AUDIT_ROLES
from moderation.spreadsheet import formula_safe
from moderation.storage import audit, audit_search
from moderation.storage.audit_search import AuditFilter
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("audit", __name__)

PAGE_SIZE = 100
MAX_FIELD = 200
# Offered as suggestions in the action filter; any other action can be typed.
KNOWN_PREFIXES = (
    "item",
    "item.view",
    "item.reveal",
    "item.claim",
    "decision",
    "bank",
    "token",
    "login",
    "logout",
    "session",
    "audit",
)
CSV_COLUMNS = ("id", "at", "actor", "action", "item_id", "details")
CHUNK_ROWS = 500  # CSV lines per chunk of the streamed export


class FilterError(ValueError):
    pass


def parse_moment(text: str, end: bool = False) -> datetime | None:
    """A UTC date (``2025-01-31``) or date and time (``2025-01-31T14:05``, or
    with a space). A date alone as the ``end`` of a range means the whole day."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{text[:40]!r} is not a date (YYYY-MM-DD) or a date and time") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if end and len(text) == 10:
        moment += timedelta(days=1)
    return moment


def filter_from_request() -> AuditFilter:
    args = request.args
    values = {k: args.get(k, "")[:MAX_FIELD] for k in ("actor", "action", "item", "from", "to", "before_id")}
    if any("\x00" in v for v in values.values()):
        raise FilterError("NUL characters are not allowed")
    numbers: dict[str, int | None] = {}
    for key, label in (("item", "item id"), ("before_id", "page")):
        raw = values[key].strip().lstrip("#")
        try:
            numbers[key] = int(raw) if raw else None
        except ValueError:
            raise FilterError(f"{label} must be a number, got {raw[:40]!r}") from None
        if numbers[key] is not None and not 0 < numbers[key] < 2**63:  # type: ignore[operator]
            raise FilterError(f"{label} is out of range")
    return AuditFilter(
        actor=values["actor"].strip(),
        action=values["action"].strip(),
        item_id=numbers["item"],
        since=parse_moment(values["from"]),
        until=parse_moment(values["to"], end=True),
        before_id=numbers["before_id"],
    )


def filter_args(where: AuditFilter) -> dict[str, str]:
    """The query string of ``where`` (without the page), as the form wrote it."""
    args = {
        "actor": where.actor,
        "action": where.action,
        "item": str(where.item_id or ""),
        "from": request.args.get("from", "").strip()[:MAX_FIELD],
        "to": request.args.get("to", "").strip()[:MAX_FIELD],
    }
    return {k: v for k, v in args.items() if v}


@bp.get("/audit")
@login_required(roles=AUDIT_ROLES)
def log_page() -> Any:
    try:
        where = filter_from_request()
    except FilterError as exc:
        return (
            render_template(
                "audit.html", error=str(exc), rows=[], args={}, form=request.args, prefixes=KNOWN_PREFIXES
            ),
            400,
        )
    rows, next_before = audit_search.page(g.db, where, PAGE_SIZE)
    return render_template(
        "audit.html",
        error=None,
        rows=[(r, audit_search.detail_pairs(r.details)) for r in rows],
        next_before=next_before,
        args=filter_args(where),
        paged=where.before_id is not None,
        form=request.args,
        prefixes=KNOWN_PREFIXES,
    )


def csv_cell(value: object) -> str:
    """Text for one CSV cell; a leading ``= + - @`` (or tab, carriage return)
    would make a spreadsheet evaluate it, so it gets an apostrophe first."""
    return str(formula_safe("" if value is None else str(value)))


def csv_chunks(records: Iterator[Any]) -> Iterator[str]:
    """The header line, then the records as CSV, ``CHUNK_ROWS`` lines per chunk,
    every cell neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(CSV_COLUMNS)
    yield flush()  # the download starts at once, however long the query takes
    rows = 0
    for r in records:
        details = json.dumps(r.details or {}, ensure_ascii=False, sort_keys=True)
        writer.writerow(
            [csv_cell(c) for c in (r.id, r.at.isoformat(), r.actor, r.action, r.item_id, details)]
        )
        rows += 1
        if rows % CHUNK_ROWS == 0:
            yield flush()
    if rows % CHUNK_ROWS:
        yield flush()


@bp.get("/audit.csv")
@login_required(roles=AUDIT_ROLES)
def export_csv() -> Any:
    try:
        where = filter_from_request()
    except FilterError as exc:
        return Response(str(exc) + "\n", 400, mimetype="text/plain")
    newest = audit_search.latest_id(g.db)
    bound = newest + 1 if where.before_id is None else min(where.before_id, newest + 1)
    snapshot = dataclasses.replace(where, before_id=bound)
    audit.record(g.db, g.user.username, "audit.export", None, filters=where.as_details(), up_to_id=newest)
    g.db.commit()

    # The request's session is closed when the view returns: the stream opens its own,
    # and needs no request context (so nothing is left open if the client goes away).
    sessions = services().sessions

    def rows() -> Iterator[str]:
        with sessions() as db:
            yield from csv_chunks(audit_search.stream(db, snapshot))

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    resp = Response(rows(), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    resp.headers["Cache-Control"] = "no-store, private"
    return resp
