"""Queue views for leads (seniors, admins, auditors): waiting, claimed,
escalated and breached items with their SLA and lease countdowns. Read-only:
nothing here claims or changes an item, so auditors see the same pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, abort, g, render_template, request

from moderation import queue_policy
from moderation.domain import LEAD_ROLES, Role
from moderation.storage import audit, queue_views
from moderation.storage.models import utcnow
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("queues", __name__)
PAGE_SIZE = 50


@bp.app_template_filter("sla_left")
def sla_left(seconds: int | None) -> str:
    """``{{ item.sla_seconds_left|sla_left }}`` -> "5 h 10 min left" / "breached 3 h ago"."""
    return queue_policy.describe_sla(seconds)


@bp.app_template_filter("left_until")
def left_until(iso: str | None) -> str:
    """``{{ item.lease_expires_at|left_until }}`` -> "4 min 10 s" / "ended"; lease.js keeps it current."""
    if not iso:
        return "none"
    seconds = queue_policy.seconds_left(datetime.fromisoformat(iso), utcnow())
    return "ended" if seconds is None or seconds <= 0 else f"{queue_policy.describe_duration(seconds)} left"


@bp.app_template_global("server_now")
def server_now() -> str:
    """The server's clock for lease.js, which counts down against it, not the browser's."""
    return utcnow().isoformat()


@bp.app_template_global("claim_lease_seconds")
def claim_lease_seconds() -> int:
    return services().settings.claim_lease_seconds


@bp.get("/queues")
@login_required(roles=LEAD_ROLES)
def queue_page() -> Any:
    view = request.args.get("view", "waiting")
    if view not in queue_views.VIEWS:
        abort(404, description=f"no queue view {view!r}; use one of {', '.join(queue_views.VIEWS)}")
    page = request.args.get("page", 1, type=int) or 1
    if page < 1:
        abort(404, description="pages start at 1")
    now = utcnow()
    admin = g.user.role == Role.ADMIN
    counts = queue_views.view_counts(g.db, include_restricted=admin, now=now)
    rows = queue_views.view_rows(
        g.db, view, include_restricted=admin, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, now=now
    )
    audit.record(g.db, g.user.username, "queue.view", view=view, page=page)
    g.db.commit()
    pages = max(1, -(-counts[view] // PAGE_SIZE))
    near_hours = services().settings.sla_near_hours
    return render_template(
        "queues.html",
        views=queue_views.VIEWS,
        view=view,
        counts=counts,
        rows=[_row(r, now, near_hours) for r in rows],
        page=page,
        pages=pages,
        near_hours=near_hours,
    )


def _row(row: queue_views.QueueRow, now: datetime, near_hours: float) -> dict[str, Any]:
    sla = queue_policy.seconds_left(row.due_at, now)
    lease = queue_policy.seconds_left(row.lease_expires_at, now)
    return {
        "id": row.id,
        "tier": row.tier,
        "priority": row.priority,
        "reason": row.reason,
        "report_reason": row.report_reason,
        "age": queue_policy.describe_duration(int((now - row.created_at).total_seconds())),
        "due_at": row.due_at.isoformat() if row.due_at else None,
        "sla_seconds_left": sla,
        "near": queue_policy.is_near(row.due_at, now, near_hours),
        "claimed_by": row.claimed_by,
        "lease_expires_at": row.lease_expires_at.isoformat() if row.lease_expires_at else None,
        "lease_left": queue_policy.describe_duration(lease) if lease is not None else None,
    }
