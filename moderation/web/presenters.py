"""Item -> JSON-ready dict, shared by the console templates and the API."""

from __future__ import annotations

from typing import Any

from moderation.storage.models import Item


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
    }


def _frame_count(vpdq: str | None) -> int | None:
    if not vpdq:
        return None
    from moderation.hashing.video import parse

    try:
        return len(parse(vpdq))
    except ValueError:
        return None
