"""Signal values as banks store them: validation and normalisation (pure).

``sha256`` 64 hex, ``md5`` 32 hex, ``pdq`` 64 hex (threatexchange bit order),
``vpdq`` a video's frame hashes in python-threatexchange's vPDQ text format.
Hex is stored lowercase so exact lookups never miss on case.
"""

from __future__ import annotations

import re

from moderation.domain import SIGNAL_TYPES

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
