"""Hash submissions for helplines and trusted flaggers, under /api/v1/submissions.

A token with scope ``hashes:submit`` submits hashes (never images: the API has
no way to send one) under a case id; they go to the token's bank, and the token
sees and withdraws only that bank's entries of its cases. An admin may use the
same endpoints naming the bank with ``?bank=``. Re-submitting is idempotent.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, request

from moderation import text_limits
from moderation.domain import EntrySpec, EntryStatus
from moderation.errors import NotFound, RequestError
from moderation.storage import banks
from moderation.storage.models import Bank, BankEntry
from moderation.web.banks_api import (
    json_object,
    register_json_errors,
    reject_nul_characters,
    reject_unknown,
    str_field,
    validated_specs,
)
from moderation.web.security import api_access

bp = Blueprint("submissions_api", __name__, url_prefix="/api/v1")
register_json_errors(bp)
bp.before_request(reject_nul_characters)

SUBMIT: dict[str, Any] = {"roles": ("admin",), "scopes": ("hashes:submit",)}


def _target_bank() -> Bank:
    """The token's bank; an admin names one with ``?bank=``."""
    requested = request.args.get("bank", "").strip()
    if g.token is not None:
        if requested and requested != g.token.bank:
            abort(403, description=f"this token submits to bank {g.token.bank!r} only")
        requested = g.token.bank or ""
    if not requested:
        raise RequestError("name the bank: ?bank=<name> (tokens submit to their own bank)")
    return banks.get_bank(g.db, requested)


def _check_case_id(case_id: str) -> str:
    """The case id as stored (surrounding spaces removed, as every entry field is)."""
    case_id = case_id.strip()
    if not case_id or "/" in case_id or not case_id.isprintable():
        raise RequestError("case_id must be printable text without '/'")
    return case_id


def _case_entries(bank: Bank, case_id: str) -> list[BankEntry]:
    entries = banks.entries_by_case(g.db, bank, case_id.strip())
    if not entries:
        raise NotFound(f"no submission with case id {case_id!r}")
    return entries


def _hash_spec(item: dict[str, Any], where: str) -> EntrySpec:
    if set(item) - {"signal", "value"}:
        reject_unknown(item, {"signal", "value"}, where + "send hashes only (never images); ")
    return EntrySpec(
        signal=str_field(item, "signal", required=True, max_len=16, where=where),
        value=str_field(item, "value", required=True, max_len=200_000, where=where),
    )


@bp.post("/submissions")
@api_access(**SUBMIT)
def submit() -> Any:
    bank = _target_bank()
    body = json_object()
    reject_unknown(body, {"case_id", "hashes", "note"})
    case_id = _check_case_id(str_field(body, "case_id", required=True, max_len=text_limits.ID))
    note = str_field(body, "note", max_len=text_limits.NOTE)
    specs = [
        EntrySpec(s.signal, s.value, case_id=case_id, note=note)
        for s in validated_specs(body.get("hashes"), _hash_spec, field="hashes")
    ]
    result = banks.add_entries(g.db, bank, specs, added_by=g.actor, revive=True)
    g.db.commit()
    return (
        jsonify(
            case_id=case_id,
            added=result.added,
            existing=result.existing,
            revived=result.revived,
            entry_ids=result.ids + result.existing_ids,
        ),
        201,
    )


@bp.get("/submissions/<case_id>")
@api_access(**SUBMIT)
def submission_status(case_id: str) -> Any:
    bank = _target_bank()
    entries = _case_entries(bank, case_id)
    return jsonify(
        case_id=case_id,
        entries=[
            {
                "id": e.id,
                "signal": e.signal,
                "status": e.status,
                "matched": e.match_count > 0,
                "match_count": e.match_count,
                "last_matched_at": e.last_matched_at.isoformat() if e.last_matched_at else None,
            }
            for e in entries
        ],
    )


@bp.post("/submissions/<case_id>/withdraw")
@api_access(**SUBMIT)
def withdraw(case_id: str) -> Any:
    bank = _target_bank()
    body = json_object(optional=True)
    reject_unknown(body, {"reason"})
    reason = str_field(body, "reason", max_len=text_limits.REASON)
    entries = _case_entries(bank, case_id)
    changed = banks.set_status(g.db, bank, entries, EntryStatus.WITHDRAWN, actor=g.actor, reason=reason)
    g.db.commit()
    return jsonify(case_id=case_id, withdrawn=changed, entries=len(entries))
