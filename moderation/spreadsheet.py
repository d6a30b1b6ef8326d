"""CSV cells that are safe to open in a spreadsheet (bank exports, the audit log)."""

from __future__ import annotations

# A CSV cell starting with one of these is a formula to a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: object) -> object:
    """``value`` for a CSV cell: text a spreadsheet would evaluate gets an apostrophe first."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
