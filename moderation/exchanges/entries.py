"""Small helpers exchanges share when turning their records into bank entries.
Validation of entries themselves lives in moderation/hashing/signals.py."""

from __future__ import annotations


def join_within(ids: list[str], limit: int) -> str:
    """As many of ``ids`` as fit in ``limit`` characters, comma-separated, whole
    ids only (an exchange may list more cases than a column holds)."""
    out = ""
    for one in ids:
        candidate = f"{out},{one}" if out else one
        if len(candidate) > limit:
            break
        out = candidate
    return out
