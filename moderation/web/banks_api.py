"""Hash bank JSON API under /api/v1/banks (documented in openapi.json).

Reads: admins, or a token with scope ``banks:read``: entries carry victims'
case references and notes, which nobody else needs (a moderator sees the
matches of the item they hold, without them, on the item). Writes: admins, or
a token with scope ``banks:write``. A token bound to a bank (its ``bank``)
sees only that bank. Errors are ``{"error": ...}`` with 400 (bad JSON or
values), 403, 404 (unknown bank or entry) or 409 (duplicate bank, withdrawn
entry). Every write commits with its audit record and change-feed row.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from moderation import text_limits
from moderation.domain import SIGNAL_TYPES, EntrySpec, EntryStatus
from moderation.errors import Forbidden, NotFound, RequestError
from moderation.storage import banks, flood
from moderation.storage.db import is_unicode_text
from moderation.storage.models import Bank
from moderation.web.security import api_access

bp = Blueprint("banks_api", __name__, url_prefix="/api/v1")

READ: dict[str, Any] = {"roles": ("admin",), "scopes": ("banks:read",)}
WRITE: dict[str, Any] = {"roles": ("admin",), "scopes": ("banks:write",)}

MAX_ENTRIES = 10_000
PAGE_DEFAULT, PAGE_MAX = 50, 200
# GET /api/v1/banks/quarantined is the quarantine list, so no bank may be called that.
RESERVED_BANK_NAMES = frozenset({"quarantined"})


def register_json_errors(blueprint: Blueprint) -> None:
    """HTTP errors and RequestError (and its 404/409 kinds) as JSON; the request's
    session is closed uncommitted, so nothing of a failed request is kept."""

    @blueprint.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @blueprint.errorhandler(RequestError)
    def _request(exc: RequestError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), exc.status

    @blueprint.errorhandler(IntegrityError)
    def _race(exc: IntegrityError) -> tuple[Response, int]:
        # Two requests created the same bank at once: the loser is told, not a 500.
        return jsonify(error="this conflicts with a change made at the same time; try again"), 409


def reject_nul_characters() -> None:
    """PostgreSQL text cannot hold NUL: refuse it in the URL (JSON strings are
    checked by ``str_field``) instead of failing in the database."""
    values = [*(request.view_args or {}).values(), *(v for _, v in request.args.items(multi=True))]
    if any(isinstance(v, str) and "\x00" in v for v in values):
        abort(400, description="NUL characters are not allowed in the URL")


register_json_errors(bp)
bp.before_request(reject_nul_characters)


# -- request parsing (shared with submissions_api) -------------------------------------
def json_object(optional: bool = False) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is ``{}`` when ``optional``."""
    if optional and not request.get_data(cache=True).strip():
        return {}
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # nesting deeper than the parser's stack
        body = None
    if not isinstance(body, dict):
        raise RequestError("send a JSON object as the request body")
    return body


def reject_unknown(obj: dict[str, Any], allowed: set[str] | frozenset[str], where: str = "") -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise RequestError(
            f"{where}unexpected field {unknown[0]!r}: expected only {', '.join(sorted(allowed))}"
        )


def str_field(
    obj: dict[str, Any], key: str, *, required: bool = False, max_len: int = text_limits.ID, where: str = ""
) -> str:
    value = obj.get(key)
    if value is None or (required and value == ""):
        if required:
            raise RequestError(f"{where}{key} is required")
        return ""
    if not isinstance(value, str):
        raise RequestError(f"{where}{key} must be a string")
    text_limits.check(f"{where}{key}", value, max_len)
    if "\x00" in value:
        raise RequestError(f"{where}{key} must not contain NUL characters")
    if not is_unicode_text(value):
        raise RequestError(f"{where}{key} must be valid Unicode text")
    return value


def validated_specs(items: object, build: Any, field: str = "entries") -> list[EntrySpec]:
    """``build(item, where)`` -> EntrySpec for every item of a non-empty JSON list,
    each checked now so an error names its position."""
    if not isinstance(items, list) or not items:
        raise RequestError(f"{field} must be a non-empty list")
    if len(items) > MAX_ENTRIES:
        raise RequestError(f"at most {MAX_ENTRIES} {field} per request")
    specs = []
    for n, item in enumerate(items):
        where = f"{field}[{n}]: "
        if not isinstance(item, dict):
            raise RequestError(f"{where}expected an object")
        spec = build(item, where)
        try:
            banks.normalise_spec(spec)
        except RequestError as exc:
            raise RequestError(f"{where}{exc}") from None
        specs.append(spec)
    return specs


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high}")
    return value


def choice_arg(name: str, choices: tuple[str, ...]) -> str:
    value = request.args.get(name, "").strip()
    if value and value not in choices:
        raise RequestError(f"unknown {name} {value[:40]!r}: expected one of {', '.join(choices)}")
    return value


# -- presentation --------------------------------------------------------------------
def visible_bank(name: str) -> Bank:
    """The bank, if the caller may see it: a token bound to a bank sees only that one."""
    if g.token is not None and g.token.bank is not None and g.token.bank != name:
        raise NotFound(f"no bank named {name!r}")
    return banks.get_bank(g.db, name)


# -- banks ---------------------------------------------------------------------------
@bp.get("/banks")
@api_access(**READ)
def list_banks() -> Any:
    found = [b for b in banks.list_banks(g.db) if g.token is None or g.token.bank in (None, b.name)]
    return jsonify(banks=[banks.bank_dict(b, banks.bank_stats(g.db, b)) for b in found])


def _bank_fields(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """Type-checked bank settings from a JSON body (range checks are storage's)."""
    out: dict[str, Any] = {}
    for key in keys:
        if key not in body:
            continue
        value = body[key]
        if key in ("action", "description"):
            out[key] = str_field(body, key, max_len=text_limits.NOTE)
        elif key == "pdq_distance" and (isinstance(value, bool) or not isinstance(value, int)):
            raise RequestError(f"pdq_distance must be an integer 0..31, got {value!r}")
        elif key == "vpdq_share" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RequestError(f"vpdq_share must be a number in (0, 1], got {value!r}")
        elif key == "enabled" and not isinstance(value, bool):
            raise RequestError("enabled must be true or false")
        else:
            out[key] = float(value) if key == "vpdq_share" else value
    return out


@bp.post("/banks")
@api_access(**WRITE)
def create_bank() -> Any:
    if g.token is not None and g.token.bank is not None:
        abort(403, description=f"this token is bound to bank {g.token.bank!r} and cannot create banks")
    body = json_object()
    reject_unknown(body, {"name", "action", "description", "pdq_distance", "vpdq_share"})
    name = str_field(body, "name", required=True, max_len=text_limits.NAME)
    if name in RESERVED_BANK_NAMES:
        raise RequestError(f"{name!r} is a reserved name; choose another")
    fields = _bank_fields(body, ("action", "description", "pdq_distance", "vpdq_share"))
    if not fields.get("action"):
        raise RequestError("action is required")
    action = fields.pop("action")
    bank = banks.create_bank(g.db, name, action, actor=g.actor, **fields)
    g.db.commit()
    return jsonify(banks.bank_dict(bank, banks.bank_stats(g.db, bank))), 201


@bp.get("/banks/<name>")
@api_access(**READ)
def get_bank(name: str) -> Any:
    bank = visible_bank(name)
    return jsonify(banks.bank_dict(bank, banks.bank_stats(g.db, bank)))


@bp.patch("/banks/<name>")
@api_access(**WRITE)
def update_bank(name: str) -> Any:
    bank = visible_bank(name)
    if g.token is not None and g.token.bank is not None:
        # A bank's action and thresholds reflect how far the platform trusts its
        # submitter: the submitter's own token must not change them.
        raise Forbidden("a token bound to a bank cannot change the bank's settings; ask an admin")
    body = json_object()
    reject_unknown(body, set(banks.UPDATABLE_BANK_FIELDS))
    changes = _bank_fields(body, banks.UPDATABLE_BANK_FIELDS)
    if not changes:
        raise RequestError(f"nothing to change: send any of {', '.join(banks.UPDATABLE_BANK_FIELDS)}")
    banks.update_bank(g.db, bank, actor=g.actor, **changes)
    g.db.commit()
    return jsonify(banks.bank_dict(bank, banks.bank_stats(g.db, bank)))


@bp.get("/banks/quarantined")
@api_access(**READ)
def quarantined() -> Any:
    rows = flood.quarantined_entries(g.db)
    if g.token is not None and g.token.bank is not None:
        rows = [(e, name) for e, name in rows if name == g.token.bank]
    return jsonify(entries=[banks.entry_dict(e, name) for e, name in rows])


# -- entries -------------------------------------------------------------------------
@bp.get("/banks/<name>/entries")
@api_access(**READ)
def list_entries(name: str) -> Any:
    bank = visible_bank(name)
    limit = int_arg("limit", PAGE_DEFAULT, 1, PAGE_MAX) or PAGE_DEFAULT
    found = banks.search_entries(
        g.db,
        bank,
        query=request.args.get("q", "")[:200],
        status=choice_arg("status", tuple(s.value for s in EntryStatus)),
        signal=choice_arg("signal", SIGNAL_TYPES),
        before_id=int_arg("before_id", None, 1, 2**63 - 1),
        limit=limit + 1,  # one more than asked: is there a next page?
    )
    page = found[:limit]
    return jsonify(
        bank=bank.name,
        entries=[banks.entry_dict(e, bank.name) for e in page],
        next_before_id=page[-1].id if len(found) > limit else None,
    )


def _entry_spec(item: dict[str, Any], where: str) -> EntrySpec:
    reject_unknown(item, {"signal", "value", "case_id", "source_ref", "note"}, where)
    return EntrySpec(
        signal=str_field(item, "signal", required=True, max_len=16, where=where),
        value=str_field(item, "value", required=True, max_len=200_000, where=where),
        source_ref=str_field(item, "source_ref", where=where),
        case_id=str_field(item, "case_id", where=where),
        note=str_field(item, "note", max_len=text_limits.NOTE, where=where),
    )


@bp.post("/banks/<name>/entries")
@api_access(**WRITE)
def add_entries(name: str) -> Any:
    bank = visible_bank(name)
    body = json_object()
    reject_unknown(body, {"entries"})
    specs = validated_specs(body.get("entries"), _entry_spec)
    result = banks.add_entries(g.db, bank, specs, added_by=g.actor)
    g.db.commit()
    return jsonify(added=result.added, existing=result.existing, ids=result.ids), 201


@bp.get("/banks/<name>/entries/<int:entry_id>")
@api_access(**READ)
def get_entry(name: str, entry_id: int) -> Any:
    bank = visible_bank(name)
    entry = banks.get_entry(g.db, bank, entry_id)
    out = banks.entry_dict(entry, bank.name)
    out["hits"] = [{"window_start": w.isoformat(), "hits": n} for w, n in flood.hit_history(g.db, entry.id)]
    return jsonify(out)


def _change_status(name: str, entry_id: int, status: EntryStatus) -> Any:
    bank = visible_bank(name)
    body = json_object(optional=True)
    reject_unknown(body, {"reason"})
    reason = str_field(body, "reason", max_len=text_limits.REASON)
    entry = banks.get_entry(g.db, bank, entry_id)
    changed = banks.set_status(g.db, bank, [entry], status, actor=g.actor, reason=reason)
    g.db.commit()
    return jsonify(changed=changed, entry=banks.entry_dict(entry, bank.name))


@bp.post("/banks/<name>/entries/<int:entry_id>/withdraw")
@api_access(**WRITE)
def withdraw_entry(name: str, entry_id: int) -> Any:
    return _change_status(name, entry_id, EntryStatus.WITHDRAWN)


@bp.post("/banks/<name>/entries/<int:entry_id>/disable")
@api_access(**WRITE)
def disable_entry(name: str, entry_id: int) -> Any:
    return _change_status(name, entry_id, EntryStatus.DISABLED)


@bp.post("/banks/<name>/entries/<int:entry_id>/enable")
@api_access(**WRITE)
def enable_entry(name: str, entry_id: int) -> Any:
    """Also releases a quarantined entry."""
    return _change_status(name, entry_id, EntryStatus.ACTIVE)
