"""Item -> JSON-ready dict, shared by the console templates and the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import object_session

from moderation import queue_policy
from moderation.storage import groups
from moderation.storage.models import Item, utcnow


def item_dict(item: Item) -> dict[str, Any]:
    return {
        "id": item.id,
        "event_id": item.event_id,
        "content_id": item.content_id,
        "uploader_id": item.uploader_id,
        "media_type": item.media_type,
        "state": item.state,
        "tier": item.tier,
        "route": item.route,
        "reason": item.reason,
        "priority": item.priority,
        "classifier_score": item.score,
        "model_version": item.model_version or None,
        "model_scores": item.model_scores or [],
        "matches": item.matches or [],
        # Body-part boxes from the optional detector, relative to the picture:
        # [{"label", "score", "x", "y", "w", "h"}], or None when it did not run.
        "regions": item.regions,
        "media_kind": "video" if item.vpdq else "image",
        "hashes": {
            "sha256": item.sha256,
            "md5": item.md5,
            "pdq": item.pdq,
            "pdq_quality": item.pdq_quality,
            "vpdq_frames": _frame_count(item.vpdq),
        },
        "lease_expires_at": item.lease_expires_at.isoformat() if item.lease_expires_at else None,
        "created_at": item.created_at.isoformat(),
        "decided_at": item.decided_at.isoformat() if item.decided_at else None,
        # Queue order (queue_policy): the SLA deadline, seconds left (negative once breached), rank.
        "due_at": item.due_at.isoformat() if item.due_at else None,
        "sla_seconds_left": queue_policy.seconds_left(item.due_at, utcnow()),
        "rank_at": item.rank_at.isoformat() if item.rank_at else None,
        # Near-duplicates (storage/groups.py): the group key and how many open items it has.
        "group": groups.summary(object_session(item), item),
        # Four eyes (review.py): the first reviewer's removal waiting for a second
        # reviewer, and a disagreeing second opinion ("second"); user ids left out.
        "first_review": _review_view(item.first_review),
    }


def _review_view(review: dict[str, Any] | None) -> dict[str, Any] | None:
    if not review:
        return None
    view = {k: v for k, v in review.items() if k not in ("user_id", "second")}
    second = review.get("second")
    if isinstance(second, dict):
        view["second"] = {k: v for k, v in second.items() if k != "user_id"}
    return view


def _frame_count(vpdq: str | None) -> int | None:
    if not vpdq:
        return None
    from moderation.hashing.video import parse

    try:
        return len(parse(vpdq))
    except ValueError:
        return None
