"""The rules every incoming bank entry passes, whatever it came from (a file or
an exchange): a known signal, a well-formed value in its stored form, and text
fields that fit the storage columns."""

from __future__ import annotations

from moderation.domain import EntrySpec
from moderation.hashing import signals

# The sizes of the bank_entries columns (moderation/storage/models.py). ``note``
# is unbounded text.
FIELD_LIMITS = {"source_ref": 200, "case_id": 200, "added_by": 100}


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
    normalised = signals.normalise(signal, value)
    fields = {"source_ref": source_ref.strip(), "case_id": case_id.strip(), "added_by": added_by.strip()}
    for name, text in fields.items():
        if len(text) > FIELD_LIMITS[name]:
            raise ValueError(f"{name} is {len(text)} characters long; the limit is {FIELD_LIMITS[name]}")
    return EntrySpec(signal=signal, value=normalised, note=note.strip(), **fields)


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
