"""CSV cells that are safe to open in a spreadsheet (bank exports, the audit log),
and read back exactly as they were written (bank imports)."""

from __future__ import annotations

# A CSV cell starting with one of these is a formula to a spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _guarded(text: str) -> bool:
    """Apostrophes (none or more), then a formula character."""
    return text.lstrip("'").startswith(FORMULA_START)


def formula_safe(value: object) -> object:
    """``value`` for a CSV cell: text a spreadsheet would evaluate gets an
    apostrophe first. So does text that already has apostrophes before a
    formula character, so that ``unguard`` removes exactly the one added here:
    "'=" comes back as "'=", not "="."""
    if isinstance(value, str) and _guarded(value):
        return "'" + value
    return value


def unguard(cell: str) -> str:
    """The text ``formula_safe`` was given."""
    return cell[1:] if cell.startswith("'") and _guarded(cell) else cell
