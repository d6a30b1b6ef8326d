"""Near-duplicate groups in the console: the group page, bulk decisions, and the
"apply to the group" decision that the item page and the JSON API send.

Who may look: whoever may see the item the group is reached from (its live
claim holder, a senior, an admin; ``actions.visible_item``). The page shows no
media: members are listed with how alike they are, and link to their own pages
for those who may open them. Deciding goes through ``review_groups``: one
transaction, one decision per member, rolled back as a whole on any refusal.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flask import Blueprint, flash, g, jsonify, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from moderation import policy, review_groups, text_limits
from moderation.domain import REVIEW_ROLES, ItemState, Role, Tier
from moderation.review import ReviewError
from moderation.storage import audit, groups, queue
from moderation.storage.models import Item, User, utcnow
from moderation.web import actions
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("groups", __name__)
# Members listed on the page; larger groups are decided in steps anyway.
PAGE_MEMBERS = 500


# -- deciding --------------------------------------------------------------------------
def decide(
    item: Item, action: str, reason: str, note: str, member_ids: Iterable[int] | None = None
) -> review_groups.GroupDecision:
    """Decide ``item``'s group (``review_groups.decide_group``) and commit; on a
    refusal nothing is kept and ``ReviewError`` propagates. Decisions are
    published after the commit."""
    svc = services()
    try:
        outcome = review_groups.decide_group(
            g.db,
            item,
            g.user,
            action,
            reason,
            note,
            settings=svc.settings,
            member_ids=member_ids,
        )
        g.db.commit()
    except ReviewError:
        g.db.rollback()
        raise
    except IntegrityError:  # a concurrent submit of the same decision won
        g.db.rollback()
        raise ReviewError("an item of this group was just decided by another request") from None
    published = [(i, r.published) for i, r in outcome.results if r.published is not None]
    for _item_id, decision in published:
        svc.metrics.decisions.labels(decision.action, decision.source).inc()
    if published:
        svc.publisher.publish_soon([i for i, _ in published])
    return outcome


def decide_whole_group(item: Item) -> bool:
    """The item page's decision with "apply to all in the group" ticked: flashes
    the outcome; False when it was refused (nothing decided)."""
    form = request.form
    try:
        outcome = decide(item, form.get("action", ""), form.get("reason", ""), form.get("note", ""))
    except ReviewError as exc:
        flash(f"Nothing decided: {exc}", "error")
        return False
    flash(outcome.summary(), "info")
    return True


def api_decision(item: Item, action: str, reason: str, note: str) -> Any:
    """POST /api/v1/items/<id>/decision with ``apply_to_group``: the item's own
    decision payload plus ``group`` (key, decided ids, members left alone)."""
    try:
        outcome = decide(item, action, reason, note)
    except ReviewError as exc:
        return jsonify(error=str(exc)), exc.status
    group = {
        "key": outcome.key,
        "decided": outcome.decided_ids,
        "left_alone": [{"id": i, "why": why} for i, why in outcome.left_alone],
    }
    _, first = outcome.results[0]
    if first.published is None:  # four eyes: held for a second review, or sent to seniors
        return jsonify(
            outcome=first.outcome, item_id=item.id, state=item.state, tier=item.tier, group=group
        ), 202
    payload = dict(first.decision.payload)
    payload["banked_hashes"] = first.banked
    payload["group"] = group
    return jsonify(payload), 201


# -- pages -----------------------------------------------------------------------------
@bp.get("/groups/<int:item_id>")
@login_required(roles=REVIEW_ROLES)
def group_page(item_id: int) -> Any:
    item = actions.visible_item(item_id)
    size = groups.size(g.db, item)
    audit.record(g.db, g.user.username, "group.view", item.id, group=item.group_key, size=size)
    g.db.commit()
    return _group_page(item, size)


def _group_page(item: Item, size: int, form: dict[str, Any] | None = None, status: int = 200) -> Any:
    """The group page; ``form``: a refused bulk decision's choices, filled in again."""
    members = _member_rows(item)
    html = render_template(
        "group.html",
        item=item,
        key=item.group_key,
        members=members,
        size=size,
        shown=len(members),
        reasons=policy.reasons(services().settings.policy_reasons),
        selectable=sum(1 for m in members if m["selectable"]),
        form=form or {},
    )
    return html, status


@bp.post("/groups/<int:item_id>/decide")
@login_required(roles=REVIEW_ROLES)
def decide_members(item_id: int) -> Any:
    """Bulk action: decide the chosen members (form field ``member``, repeated)."""
    item = actions.visible_item(item_id)
    chosen = [int(v) for v in request.form.getlist("member") if v.isascii() and v.isdigit() and len(v) < 19]
    if not chosen:
        flash("Choose at least one item of the group.", "error")
        return redirect(url_for("groups.group_page", item_id=item_id))
    try:
        text_limits.check("note", request.form.get("note", ""), text_limits.NOTE)
    except text_limits.TextTooLong as exc:
        # The page again with the choices made, so that nothing typed is lost.
        flash(f"Nothing decided: {exc}. Shorten the note and decide again.", "error")
        form = {"member": chosen, "reason": request.form.get("reason", ""), "note": request.form["note"]}
        return _group_page(item, groups.size(g.db, item), form, status=400)
    try:
        outcome = decide(
            item,
            request.form.get("action", ""),
            request.form.get("reason", ""),
            request.form.get("note", ""),
            member_ids=chosen,
        )
    except ReviewError as exc:
        flash(f"Nothing decided: {exc}", "error")
        return redirect(url_for("groups.group_page", item_id=item_id))
    flash(outcome.summary(), "info")
    if actions.may_see(item):
        return redirect(url_for("groups.group_page", item_id=item_id))
    return redirect(url_for("console.index"))


def _member_rows(item: Item) -> list[dict[str, Any]]:
    """The page's rows: the item itself first, then the group's open members."""
    members = [item]
    if item.group_key is not None:
        found = groups.open_members(g.db, item.group_key, PAGE_MEMBERS)
        # The restricted queue (suspected minors) is admins' only, here as everywhere.
        members += [
            m for m in found if m.id != item.id and (m.tier != Tier.RESTRICTED or g.user.role == Role.ADMIN)
        ]
    grouping = groups.GroupPolicy.of(services().settings)
    now = utcnow()
    holders = _usernames({m.claimed_by for m in members if m.claimed_by is not None})
    tiers = queue.claimable_tiers(g.user.role)
    rows = []
    for m in members:
        held = _live_claim(m, now)
        held_by_other = held and m.claimed_by != g.user.id
        rows.append(
            {
                "id": m.id,
                "this": m.id == item.id,
                "similarity": _similarity(item, m, grouping),
                "uploader_id": m.uploader_id,
                "age": _age(m.created_at, now),
                "state": m.state,
                "tier": m.tier,
                "held_by": holders.get(m.claimed_by or 0) if held else None,
                "open": m.state in groups.OPEN_STATES,
                "selectable": m.state in groups.OPEN_STATES and not held_by_other and m.tier in tiers,
                "linked": actions.may_see(m),
            }
        )
    return rows


def _similarity(item: Item, member: Item, grouping: groups.GroupPolicy) -> str:
    if member.id == item.id:
        return "this item"
    parts = []
    key = item.group_key or ""
    if key.startswith("entry:"):
        entry = key.removeprefix("entry:")
        match = next((m for m in member.matches or [] if str(m.get("entry_id")) == entry), None)
        if match is not None:
            parts.append(f"same bank entry ({match.get('signal')}, distance {match.get('distance')})")
    copy = groups.similarity(item, member, grouping)
    if copy is not None:
        parts.append("identical file" if copy.same_file else f"PDQ distance {copy.distance}")
    return "; ".join(parts) or "grouped with it"


def _live_claim(item: Item, now: datetime) -> bool:
    return (
        item.state == ItemState.CLAIMED.value
        and item.lease_expires_at is not None
        and item.lease_expires_at > now
    )


def _usernames(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = g.db.execute(select(User.id, User.username).where(User.id.in_(ids))).all()
    return {int(user_id): str(name) for user_id, name in rows}


def _age(created: datetime | None, now: datetime) -> str:
    if created is None:
        return ""
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
