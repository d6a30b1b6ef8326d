"""How long free text may be, wherever it enters the service: one rule for the
console's forms, the JSON API, appeals read from Kafka and bank imports.

Text over its limit is refused, never cut: the caller is told the field and
the limit (``TextTooLong``: HTTP 400 in the API, a flash message in the
console, an ``invalid_appeal`` dead letter on the appeals topic, a bad line in
an import) and nothing is stored. Limits are in characters, as PostgreSQL
counts them for ``VARCHAR(n)``.

Besides fitting the columns, the limits keep every decision event far below
the broker's 1 MiB record limit: a note of ``NOTE`` characters is at most
24 KB of JSON, even with every character escaped (docs/reliability.md,
"Records the broker refuses").
"""

from __future__ import annotations

from moderation.errors import RequestError

# One constant per kind of field.
NOTE = 2000  # moderator notes on decisions, bank entry notes and descriptions, evidence hold reasons
STATEMENT = 5000  # an appellant's statement (docs/events.md, appeal event)
REASON = 500  # why a bank entry was withdrawn, disabled or enabled
ID = 200  # ids and references: case ids, source refs, appeal and content ids, submitted_by
NAME = 100  # names: bank, token and user names, added_by (the VARCHAR(100) columns)


class TextTooLong(RequestError, ValueError):
    """Text longer than its field allows. A ``RequestError`` (the API answers 400)
    and a ``ValueError`` (hash-entry parsers report it as a bad line)."""

    code = "text_too_long"

    def __init__(self, field: str, limit: int, length: int) -> None:
        super().__init__(f"{field} is too long: {length:,} characters, at most {limit:,} allowed")
        self.field = field
        self.limit = limit
        self.length = length


def check(field: str, value: str, limit: int) -> str:
    """``value`` unchanged if it has at most ``limit`` characters; otherwise
    ``TextTooLong`` naming ``field`` (as the caller knows it: ``note``,
    ``entries[3]: case_id``) and the limit."""
    if len(value) > limit:
        raise TextTooLong(field, limit, len(value))
    return value
