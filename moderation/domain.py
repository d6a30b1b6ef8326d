"""Value types shared by the pipeline, storage and web layers. No I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class BankAction(enum.StrEnum):
    AUTO_REMOVE = "auto_remove"
    REVIEW = "review"


class Action(enum.StrEnum):
    """What the platform is told to do with a piece of content."""

    REMOVE = "remove"
    ALLOW = "allow"
    ESCALATE = "escalate"


class Source(enum.StrEnum):
    HASH_MATCH = "hash_match"
    CLASSIFIER = "classifier"
    MODERATOR = "moderator"


class Route(enum.StrEnum):
    """The worker's outcome for one upload event."""

    AUTO_REMOVE = "auto_remove"  # decision published at once, item queued for verification
    REVIEW = "review"
    ALLOW = "allow"


class ItemState(enum.StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    DECIDED = "decided"
    CLOSED = "closed"  # allowed by the pipeline, never queued


SIGNAL_TYPES = ("sha256", "md5", "pdq")


@dataclass(frozen=True)
class UploadEvent:
    event_id: str
    content_id: str
    uploader_id: str
    media_url: str
    media_type: str
    created_at: datetime
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class HashSet:
    sha256: str
    md5: str
    pdq: str  # 64 hex characters
    pdq_quality: int

    def signals(self) -> dict[str, str]:
        return {"sha256": self.sha256, "md5": self.md5, "pdq": self.pdq}


@dataclass(frozen=True)
class Match:
    bank: str
    bank_action: BankAction
    entry_id: int
    signal: str  # sha256 | md5 | pdq
    distance: int  # 0 for exact hashes

    def as_dict(self) -> dict[str, Any]:
        return {
            "bank": self.bank,
            "bank_action": self.bank_action.value,
            "entry_id": self.entry_id,
            "signal": self.signal,
            "distance": self.distance,
        }


@dataclass(frozen=True)
class Verdict:
    route: Route
    priority: int  # 0..100, higher is reviewed first
    reason: str  # machine-readable reason code
    matches: tuple[Match, ...] = ()
    score: float | None = None
