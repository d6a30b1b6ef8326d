"""Signal values as banks store them: validation and normalisation (pure).

``sha256`` 64 hex, ``md5`` 32 hex, ``pdq`` 64 hex (threatexchange bit order),
``vpdq`` a video's frame hashes in python-threatexchange's vPDQ text format.
Hex is stored lowercase so exact lookups never miss on case. ``make_entry`` is
the one check every incoming bank entry passes, whatever it came from (the API,
a file, an exchange, a moderator's removal).
"""

from __future__ import annotations

import re

from moderation import text_limits
from moderation.domain import SIGNAL_TYPES, EntrySpec

_HEX_LEN = {"sha256": 64, "md5": 32, "pdq": 64}


def normalise(signal: str, value: str) -> str:
    """The stored form of ``value``; raises ValueError naming what is wrong."""
    if signal not in SIGNAL_TYPES:
        raise ValueError(f"unknown signal {signal!r}: expected one of {', '.join(SIGNAL_TYPES)}")
    value = value.strip()
    if signal in _HEX_LEN:
        value = value.lower()
        n = _HEX_LEN[signal]
        if not re.fullmatch(rf"[0-9a-f]{{{n}}}", value):
            raise ValueError(f"{signal} value must be {n} hex characters, got {value[:80]!r}")
        return value
    from moderation.hashing.video import parse, serialize

    try:
        frames = parse(value)
    except Exception as exc:
        raise ValueError(f"vpdq value is not vPDQ text: {exc}") from None
    if not frames:
        raise ValueError("vpdq value has no frames")
    return serialize(frames)


# The limits of an entry's text fields (moderation/text_limits.py; the first
# three are the sizes of the bank_entries columns, moderation/storage/models.py).
FIELD_LIMITS = {
    "source_ref": text_limits.ID,
    "case_id": text_limits.ID,
    "added_by": text_limits.NAME,
    "note": text_limits.NOTE,
}


def make_entry(
    signal: str,
    value: str,
    *,
    source_ref: str = "",
    case_id: str = "",
    note: str = "",
    added_by: str = "",
) -> EntrySpec:
    """An ``EntrySpec`` with ``value`` in its stored form (lowercase hex,
    canonical vPDQ text). Raises ValueError with a message fit to show a user
    ("pdq value must be 64 hex characters, ..."); the input is never echoed in
    full, only its first 80 characters."""
    signal = signal.strip().lower()
    normalised = normalise(signal, value)
    fields = {
        "source_ref": source_ref.strip(),
        "case_id": case_id.strip(),
        "added_by": added_by.strip(),
        "note": note.strip(),
    }
    for name, text in fields.items():
        text_limits.check(name, text, FIELD_LIMITS[name])  # TextTooLong is a ValueError
    return EntrySpec(signal=signal, value=normalised, **fields)
