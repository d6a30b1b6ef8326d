"""Rows for tests that need queue items without running the pipeline."""

from __future__ import annotations

from typing import Any

from moderation.storage.models import Item


def make_item(n: int = 1, **overrides: Any) -> Item:
    values: dict[str, Any] = dict(
        event_id=f"e{n}",
        content_id=f"c{n}",
        uploader_id="u",
        media_url="http://x",
        media_type="image/jpeg",
        event={},
        sha256="a" * 64,
        md5="b" * 32,
        pdq="0" * 64,
        pdq_quality=90,
        score=0.5,
        model_version="m1",
        matches=[],
        route="review",
        reason="classifier_score",
        priority=50,
        state="pending",
    )
    values.update(overrides)
    return Item(**values)
