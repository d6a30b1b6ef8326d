"""Admin pages: hash banks, their entries, flood-control quarantine and API tokens.

Server-rendered forms for the ``admin`` role; every POST carries the CSRF token
(checked by ``login_required``). A refused change is shown as a flash message
and nothing of it is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from moderation import text_limits
from moderation.domain import SIGNAL_TYPES, BankAction, EntrySpec, EntryStatus
from moderation.errors import NotFound, RequestError
from moderation.storage import banks, flood, tokens
from moderation.storage.models import Bank
from moderation.web.banks_api import PAGE_DEFAULT, RESERVED_BANK_NAMES
from moderation.web.security import login_required

bp = Blueprint("admin", __name__, url_prefix="/admin")

ACTIONS = tuple(a.value for a in BankAction)
STATUSES = tuple(s.value for s in EntryStatus)
# Entry buttons: form value -> (new status, past tense for the flash message).
VERBS = {
    "withdraw": (EntryStatus.WITHDRAWN, "withdrawn"),
    "disable": (EntryStatus.DISABLED, "disabled"),
    "enable": (EntryStatus.ACTIVE, "enabled"),
    "release": (EntryStatus.ACTIVE, "released from quarantine"),
}
MAX_LINES = 10_000


@bp.before_request
def _reject_nul_characters() -> None:
    # PostgreSQL text cannot hold NUL: refuse it here instead of failing in the database.
    values = [
        *(request.view_args or {}).values(),
        *(v for _, v in request.args.items(multi=True)),
        *(v for _, v in request.form.items(multi=True)),
    ]
    if any(isinstance(v, str) and "\x00" in v for v in values):
        abort(400, description="NUL characters are not allowed")


def _commit_or_flash(change: Callable[[], str], back: str) -> Any:
    """Run ``change`` (it returns the success message); commit it, or roll back
    and show the RequestError's message. Either way, redirect to ``back``."""
    try:
        message = change()
        g.db.commit()
    except RequestError as exc:
        g.db.rollback()
        flash(str(exc), "error")
    except IntegrityError:  # lost a race with a concurrent change (e.g. the same new bank)
        g.db.rollback()
        flash("This conflicts with a change made at the same time; reload and try again.", "error")
    else:
        flash(message, "info")
    return redirect(back)


def _bank_or_404(name: str) -> Bank:
    try:
        return banks.get_bank(g.db, name)
    except NotFound as exc:
        abort(404, description=str(exc))


def _form_text(name: str, limit: int) -> str:
    """A free-text form field within its limit (text_limits); TextTooLong, a
    RequestError, is shown as the flash message."""
    return text_limits.check(name, request.form.get(name, ""), limit)


def _form_number(name: str, label: str, kind: type[int] | type[float]) -> Any:
    raw = request.form.get(name, "").strip()
    try:
        return kind(raw)
    except ValueError:
        raise RequestError(f"{label} must be a number, got {raw[:40]!r}") from None


# -- banks ---------------------------------------------------------------------------
@bp.get("/banks")
@login_required(role="admin")
def bank_list() -> Any:
    rows = [(b, banks.bank_stats(g.db, b)) for b in banks.list_banks(g.db)]
    return render_template("admin_banks.html", rows=rows, actions=ACTIONS)


@bp.post("/banks")
@login_required(role="admin")
def create_bank() -> Any:
    name = request.form.get("name", "").strip()

    def change() -> str:
        if name in RESERVED_BANK_NAMES:
            raise RequestError(f"{name!r} is a reserved name; choose another")
        banks.create_bank(
            g.db,
            name,
            request.form.get("action", ""),
            actor=g.user.username,
            description=_form_text("description", text_limits.NOTE),
            pdq_distance=_form_number("pdq_distance", "PDQ distance", int),
            vpdq_share=_form_number("vpdq_share", "vPDQ frame share", float),
        )
        return f"Bank {name} created."

    return _commit_or_flash(change, url_for("admin.bank_list"))


@bp.get("/banks/<name>")
@login_required(role="admin")
def bank_page(name: str) -> Any:
    bank = _bank_or_404(name)
    q = request.args.get("q", "").strip()[:200]
    status = request.args.get("status", "")
    status = status if status in STATUSES else ""
    signal = request.args.get("signal", "")
    signal = signal if signal in SIGNAL_TYPES else ""
    try:
        before_id: int | None = int(request.args.get("before_id", ""))
    except ValueError:
        before_id = None
    found = banks.search_entries(
        g.db, bank, query=q, status=status, signal=signal, before_id=before_id, limit=PAGE_DEFAULT + 1
    )
    entries = found[:PAGE_DEFAULT]
    return render_template(
        "admin_bank.html",
        bank=bank,
        stats=banks.bank_stats(g.db, bank),
        entries=entries,
        next_before_id=entries[-1].id if len(found) > PAGE_DEFAULT else None,
        q=q,
        status=status,
        signal=signal,
        paged=before_id is not None,
        actions=ACTIONS,
        statuses=STATUSES,
        signals=SIGNAL_TYPES,
    )


@bp.post("/banks/<name>/settings")
@login_required(role="admin")
def bank_settings(name: str) -> Any:
    bank = _bank_or_404(name)

    def change() -> str:
        banks.update_bank(
            g.db,
            bank,
            actor=g.user.username,
            action=request.form.get("action", ""),
            description=_form_text("description", text_limits.NOTE),
            pdq_distance=_form_number("pdq_distance", "PDQ distance", int),
            vpdq_share=_form_number("vpdq_share", "vPDQ frame share", float),
            enabled=request.form.get("enabled") == "on",
        )
        return f"Settings of bank {bank.name} saved."

    return _commit_or_flash(change, url_for("admin.bank_page", name=bank.name))


def parse_hash_lines(text: str, case_id: str, note: str) -> list[EntrySpec]:
    """One ``signal value`` per line; blank lines and ``#`` comments are skipped.
    Raises RequestError naming the first bad line."""
    specs = []
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        raise RequestError(f"at most {MAX_LINES} lines at a time")
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        signal, _, value = line.partition(" ")
        spec = EntrySpec(signal.lower(), value.strip(), case_id=case_id, note=note)
        try:
            banks.normalise_spec(spec)
        except RequestError as exc:
            raise RequestError(f"line {number}: {exc}") from None
        specs.append(spec)
    if not specs:
        raise RequestError("no hashes given: write one 'signal value' per line, e.g. 'md5 9e107d9d...'")
    return specs


@bp.post("/banks/<name>/entries")
@login_required(role="admin")
def add_hashes(name: str) -> Any:
    bank = _bank_or_404(name)

    def change() -> str:
        case_id = _form_text("case_id", text_limits.ID).strip()
        note = _form_text("note", text_limits.NOTE)
        specs = parse_hash_lines(request.form.get("hashes", ""), case_id, note)
        result = banks.add_entries(g.db, bank, specs, added_by=g.user.username)
        return f"{result.added} hashes added, {result.existing} already in the bank."

    return _commit_or_flash(change, url_for("admin.bank_page", name=bank.name))


@bp.post("/banks/<name>/entries/<int:entry_id>/status")
@login_required(role="admin")
def entry_status(name: str, entry_id: int) -> Any:
    bank = _bank_or_404(name)
    verb = request.form.get("verb", "")
    back = (
        url_for("admin.quarantine")
        if request.form.get("back") == "quarantine"
        else url_for("admin.bank_page", name=bank.name)
    )

    def change() -> str:
        if verb not in VERBS:
            raise RequestError(f"unknown entry action {verb[:40]!r}")
        status, done = VERBS[verb]
        reason = _form_text("reason", text_limits.REASON).strip()
        entry = banks.get_entry(g.db, bank, entry_id)
        changed = banks.set_status(g.db, bank, [entry], status, actor=g.user.username, reason=reason)
        return f"Entry {entry_id} {done}." if changed else f"Entry {entry_id} was already {entry.status}."

    return _commit_or_flash(change, back)


# -- quarantine ----------------------------------------------------------------------
@bp.get("/quarantine")
@login_required(role="admin")
def quarantine() -> Any:
    return render_template("admin_quarantine.html", rows=flood.quarantined_entries(g.db))


# -- tokens --------------------------------------------------------------------------
def _tokens_page(new_secret: str | None = None, new_name: str = "") -> Any:
    html = render_template(
        "admin_tokens.html",
        tokens=tokens.list_tokens(g.db),
        banks=banks.list_banks(g.db),
        scopes=tokens.SCOPES,
        new_secret=new_secret,
        new_name=new_name,
    )
    # The secret is on this page once: keep it out of caches and history.
    return html, 200, {"Cache-Control": "no-store, private"}


@bp.get("/tokens")
@login_required(role="admin")
def token_list() -> Any:
    return _tokens_page()


@bp.post("/tokens")
@login_required(role="admin")
def create_token() -> Any:
    name = request.form.get("name", "").strip()
    scopes = request.form.getlist("scope")
    bank = request.form.get("bank") or None
    try:
        if "hashes:submit" in scopes and bank is None:
            raise RequestError("a hashes:submit token needs a bank: the bank its submissions go to")
        secret = tokens.create_token(g.db, name, scopes, bank=bank, created_by=g.user.username)
        g.db.commit()
    except (RequestError, IntegrityError) as exc:
        g.db.rollback()
        message = str(exc) if isinstance(exc, RequestError) else f"a token named {name!r} already exists"
        flash(message, "error")
        return redirect(url_for("admin.token_list"))
    return _tokens_page(new_secret=secret, new_name=name)


@bp.post("/tokens/revoke")
@login_required(role="admin")
def revoke_token() -> Any:
    name = request.form.get("name", "")

    def change() -> str:
        tokens.revoke_token(g.db, name, actor=g.user.username)
        return f"Token {name} revoked."

    return _commit_or_flash(change, url_for("admin.token_list"))
