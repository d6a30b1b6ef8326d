"""Parse and validate upload events against upload_event.schema.json."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from moderation.domain import UploadEvent
from moderation.errors import InvalidEvent

SCHEMA_PATH = Path(__file__).with_name("upload_event.schema.json")
MAX_EVENT_BYTES = 256 * 1024


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def parse_upload_event(raw: bytes | None) -> UploadEvent:
    """Bytes from Kafka -> UploadEvent, or InvalidEvent saying exactly what is wrong."""
    if raw is None:
        raise InvalidEvent("message has no value (tombstone)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {len(raw)} bytes, over the limit of {MAX_EVENT_BYTES}")
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(data).__name__}")
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.path) or "(root)"
        raise InvalidEvent(f"schema violation at {where}: {first.message[:300]}")
    for name in ("event_id", "content_id", "uploader_id", "media_url", "media_type"):
        _check_storable(name, data[name])
    try:
        created_at = datetime.fromisoformat(data["created_at"].replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"created_at is not an RFC 3339 time: {data['created_at'][:64]!r}") from None
    return UploadEvent(
        event_id=data["event_id"],
        content_id=data["content_id"],
        uploader_id=data["uploader_id"],
        media_url=data["media_url"],
        media_type=data["media_type"],
        created_at=created_at,
        raw=data,
    )


def _check_storable(name: str, value: str) -> None:
    # JSON allows NUL and lone surrogates in strings; databases and UTF-8 do not.
    if "\x00" in value:
        raise InvalidEvent(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(f"{name} is not valid Unicode (lone surrogate)") from None


def make_upload_event(
    event_id: str, content_id: str, uploader_id: str, media_url: str, media_type: str, **extra: Any
) -> dict[str, Any]:
    """A valid event dict (used by ``moderation publish`` and tests)."""
    from moderation.storage.models import utcnow

    return {
        "schema_version": 1,
        "event_id": event_id,
        "content_id": content_id,
        "uploader_id": uploader_id,
        "media_url": media_url,
        "media_type": media_type,
        "created_at": utcnow().isoformat(),
        **extra,
    }
