"""Dead letters: the original bytes, unchanged, plus headers saying what went wrong.

Headers: ``error_class`` (stable code, e.g. ``media_undecodable``),
``error_message``, ``source_topic``, ``source_partition``, ``source_offset``,
``event_id`` (when the event parsed) and ``failed_at`` (RFC 3339).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from moderation.errors import ModerationError
from moderation.storage.models import utcnow

SendWithHeaders = Callable[[bytes, bytes, Sequence[tuple[str, bytes]]], None]


def dead_letter_headers(
    error: ModerationError, topic: str, partition: int, offset: int, event_id: str | None = None
) -> list[tuple[str, bytes]]:
    headers = [
        ("error_class", error.code.encode()),
        ("error_message", str(error)[:1000].encode("utf-8", "replace")),
        ("source_topic", topic.encode()),
        ("source_partition", str(partition).encode()),
        ("source_offset", str(offset).encode()),
        ("failed_at", utcnow().isoformat().encode()),
    ]
    if event_id:
        headers.append(("event_id", event_id.encode()))
    return headers
