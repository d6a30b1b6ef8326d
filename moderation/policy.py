"""Decision policy: the reasons a moderator gives, and which actions each may go with.

Pure: no I/O. The list comes from ``POLICY_REASONS`` (``code=Label;code=Label``);
empty means the built-in list. Codes appear in published decision events, so
they are short machine names (``[a-z0-9_]{1,50}``); labels are what the console
shows.

A few built-in codes carry a meaning that fixes the actions they go with
(``ACTIONS_FOR``); a configured list that uses one of these codes gets its
check, and any other code may go with any action. ``suspected_minor`` is also
special in review.py: it always goes to the restricted queue and never banks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType

from moderation.domain import Action
from moderation.errors import ConfigError

SETTING = "POLICY_REASONS"
CODE = re.compile(r"[a-z0-9_]{1,50}")
MAX_LABEL = 200

SUSPECTED_MINOR = "suspected_minor"
NOT_VIOLATING = "not_violating"

DEFAULT_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "ncii": "Non-consensual intimate imagery",
        "adult_nudity": "Adult nudity against policy",
        SUSPECTED_MINOR: "Suspected minor (escalate)",
        NOT_VIOLATING: "Not violating",
        "unclear": "Unclear, needs a senior look",
    }
)

# What each built-in code may be decided with. A violation reason never allows;
# "not violating" never removes; "unclear" asks for a senior. Suspected minor
# is escalated, and only an admin in the restricted queue removes with it.
ACTIONS_FOR: Mapping[str, frozenset[Action]] = MappingProxyType(
    {
        "ncii": frozenset({Action.REMOVE, Action.ESCALATE}),
        "adult_nudity": frozenset({Action.REMOVE, Action.ESCALATE}),
        SUSPECTED_MINOR: frozenset({Action.ESCALATE, Action.REMOVE}),
        NOT_VIOLATING: frozenset({Action.ALLOW}),
        "unclear": frozenset({Action.ESCALATE}),
    }
)


def parse_reasons(text: str) -> dict[str, str]:
    """``"ncii=NCII;spam=Spam"`` -> ``{"ncii": "NCII", "spam": "Spam"}``, in order.

    Empty (or only separators) is the built-in list. Raises ConfigError naming
    the setting and the bad part."""
    reasons: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        code, sep, label = (s.strip() for s in part.partition("="))
        if not sep or not CODE.fullmatch(code):
            raise ConfigError(
                f"{SETTING}: {part.strip()!r} is not code=Label with a code of 1-50 "
                "lower-case letters, digits or underscores"
            )
        if not label or len(label) > MAX_LABEL or not label.isprintable():
            raise ConfigError(
                f"{SETTING}: reason {code!r} needs a printable label of 1-{MAX_LABEL} characters"
            )
        if code in reasons:
            raise ConfigError(f"{SETTING}: reason {code!r} is listed twice")
        reasons[code] = label
    return reasons or dict(DEFAULT_REASONS)


@lru_cache(maxsize=8)
def reasons(text: str) -> Mapping[str, str]:
    """The configured reasons (parsed once per distinct setting value)."""
    return MappingProxyType(parse_reasons(text))


def pairing_error(reason: str, action: Action) -> str | None:
    """Why ``reason`` cannot go with ``action``, or None when it can."""
    allowed = ACTIONS_FOR.get(reason)
    if allowed is None or action in allowed:
        return None
    if reason == SUSPECTED_MINOR:
        return "suspected minor must be escalated, never decided directly"
    choices = " or ".join(sorted(a.value for a in allowed))
    return f"reason {reason!r} goes with {choices}, not {action.value}"
