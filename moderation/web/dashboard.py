"""The leads' dashboard: queue depth, SLA, throughput and exposure.

``/dashboard`` (a page with server-rendered SVG charts and the same numbers in
tables) and ``/api/v1/dashboard`` (JSON) for seniors, admins and auditors. Both
only read; the numbers come from ``storage/stats.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, g, jsonify, render_template

from moderation.domain import LEAD_ROLES
from moderation.storage import stats
from moderation.web import charts
from moderation.web.security import login_required
from moderation.web.services import services

bp = Blueprint("dashboard", __name__)


def duration(seconds: float | None) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``; ``-`` for none."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 3600:
        return f"{minutes} min"
    if s < 86400:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def queue_chart(tiers: list[str], table: dict[str, list[int]]) -> Any:
    series = [charts.Series(tier, [table[band][i] for band in table]) for i, tier in enumerate(tiers)]
    return charts.bar_chart(list(table), series, title="Waiting items by priority band and tier")


def hours_chart(d: stats.Dashboard) -> Any:
    labels = [h.start.strftime("%H:00") for h in d.hours]
    series = [
        charts.Series("moderators", [h.moderator for h in d.hours]),
        charts.Series("automatic", [h.automatic for h in d.hours]),
    ]
    return charts.bar_chart(labels, series, title="Decisions per hour, last 24 hours (UTC)", label_every=3)


def as_json(d: stats.Dashboard) -> dict[str, Any]:
    return {
        "generated_at": d.now.isoformat(),
        "queue": {
            "waiting": d.waiting,
            "claimed": d.claimed,
            "oldest_pending_at": _iso(d.oldest_pending_at),
            "oldest_age_seconds": d.oldest_age_seconds,
            "bands": [{"tier": b.tier, "band": b.band, "count": b.count} for b in d.bands],
        },
        "decisions_per_hour": [
            {"hour": h.start.isoformat(), "moderator": h.moderator, "automatic": h.automatic} for h in d.hours
        ],
        "sla": {
            "breached": d.sla.breached,
            "near": d.sla.near,
            "near_hours": d.sla.near_hours,
            "decided_late_7d": d.sla.decided_late,
            "decided_on_time_7d": d.sla.decided_on_time,
        },
        "moderators": [
            {
                "username": m.username,
                "decisions": m.decisions,
                "active_hours": m.active_hours,
                "decisions_per_hour": round(m.per_hour, 2),
                "median_claim_seconds": m.median_claim_seconds,
                "items_viewed": m.items_viewed,
                "revealed_seconds": m.revealed_seconds,
                "since_break_at": _iso(m.since_break_at),
                "break_due": m.break_due,
                "breaks_today": m.breaks_today,
            }
            for m in d.moderators
        ],
    }


def _numbers() -> stats.Dashboard:
    return stats.dashboard(g.db, services().settings.sla_near_hours)


@bp.get("/dashboard")
@login_required(roles=LEAD_ROLES)
def page() -> Any:
    d = _numbers()
    tiers, table = stats.band_table(d.bands)
    return render_template(
        "dashboard.html",
        d=d,
        tiers=tiers,
        table=table,
        queue_chart=queue_chart(tiers, table),
        hours_chart=hours_chart(d),
        duration=duration,
    )


@bp.get("/api/v1/dashboard")
@login_required(api=True, roles=LEAD_ROLES)
def api() -> Any:
    return jsonify(as_json(_numbers()))
