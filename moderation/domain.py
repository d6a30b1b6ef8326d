"""Value types shared by the pipeline, storage and web layers. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class BankAction(enum.StrEnum):
    """What a match in a bank does. ``allow`` banks are allowlists of known benign
    images: a match there suppresses classifier-only flags, never a removal."""

    AUTO_REMOVE = "auto_remove"
    REVIEW_HIGH = "review_high"
    REVIEW = "review"
    ALLOW = "allow"


class BankSource(enum.StrEnum):
    LOCAL = "local"
    STOPNCII = "stopncii"
    NCMEC = "ncmec"
    FILE_IMPORT = "file_import"


class EntryStatus(enum.StrEnum):
    """A bank entry's lifecycle. Only ``active`` and ``quarantined`` entries match;
    a quarantined entry's automatic action falls back to review (flood control)."""

    ACTIVE = "active"
    QUARANTINED = "quarantined"
    DISABLED = "disabled"
    WITHDRAWN = "withdrawn"

    @property
    def matches(self) -> bool:
        return self in (EntryStatus.ACTIVE, EntryStatus.QUARANTINED)


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


class Role(enum.StrEnum):
    """Console roles. ``auditor`` reads (audit log, dashboard, evidence) and never
    claims or decides; ``senior`` also works the escalation queue; ``admin`` also
    the restricted queue (suspected minors), banks, tokens and evidence holds."""

    MODERATOR = "moderator"
    SENIOR = "senior"
    ADMIN = "admin"
    AUDITOR = "auditor"


# Who may do what in the console (web/security.login_required(roles=...)).
REVIEW_ROLES = (Role.MODERATOR, Role.SENIOR, Role.ADMIN)  # claim, view, decide
LEAD_ROLES = (Role.SENIOR, Role.ADMIN, Role.AUDITOR)  # dashboard and queue views
AUDIT_ROLES = (Role.ADMIN, Role.AUDITOR)  # audit log, evidence (read)


class Tier(enum.StrEnum):
    """Which queue an open item waits in; ``queue.claimable_tiers`` says who works each."""

    MODERATOR = "moderator"  # first review
    SECOND_REVIEW = "second_review"  # four eyes: a removal that banks waits for another moderator
    APPEAL = "appeal"  # a reopened decision, for a moderator who has not decided it before
    SENIOR = "senior"  # escalated by a moderator
    RESTRICTED = "restricted"  # suspected minor: admins only, for the reporting process


SIGNAL_TYPES = ("sha256", "md5", "pdq", "vpdq")


@dataclass(frozen=True)
class EntrySpec:
    """One hash to put in a bank, as read from a file, an exchange or the API.

    ``vpdq`` values are a video's frame hashes in python-threatexchange's vPDQ
    text format. ``source_ref`` identifies the entry at its source (e.g. a
    StopNCII hash id) so a later withdrawal can find it."""

    signal: str
    value: str
    source_ref: str = ""
    case_id: str = ""
    note: str = ""
    added_by: str = ""


@dataclass(frozen=True)
class BankConfig:
    """A bank as the matcher sees it."""

    bank_id: int
    name: str
    action: BankAction
    pdq_distance: int = 31
    vpdq_share: float = 0.8
    enabled: bool = True


@dataclass(frozen=True)
class EntryState:
    """A bank entry as the matcher needs it; ``matchable`` False removes it."""

    entry_id: int
    bank_id: int
    signal: str
    value: str
    status: EntryStatus

    @property
    def matchable(self) -> bool:
        return self.status.matches


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
    """Every signal of one upload.

    ``pdq_variants`` are extra PDQ hashes the matcher also looks up (rotations,
    mirror images, the picture with uniform borders trimmed), keyed by variant
    name. For a video, ``vpdq`` holds its frame hashes (vPDQ text) and
    ``vpdq_frames`` their PDQ hex; ``pdq`` is then the first good frame's hash."""

    sha256: str
    md5: str
    pdq: str  # 64 hex characters, "" when no frame could be hashed
    pdq_quality: int
    pdq_variants: Mapping[str, str] = field(default_factory=dict, compare=False)
    variant_quality: Mapping[str, int] = field(default_factory=dict, compare=False)
    vpdq: str | None = None
    vpdq_frames: tuple[str, ...] = ()

    def signals(self) -> dict[str, str]:
        """The signals stored in a bank when this upload is confirmed."""
        out = {"sha256": self.sha256, "md5": self.md5}
        if self.vpdq:
            out["vpdq"] = self.vpdq
        elif self.pdq:
            out["pdq"] = self.pdq
        return out


@dataclass(frozen=True)
class Match:
    bank: str
    bank_action: BankAction
    entry_id: int
    signal: str  # sha256 | md5 | pdq | vpdq
    distance: int  # 0 for exact hashes; for vpdq the largest matched frame distance
    variant: str = "original"  # which PDQ variant of the upload matched
    quarantined: bool = False  # flood control: the entry's automatic action is suspended
    share: float | None = None  # vpdq: share of the upload's frames that matched the entry
    frames: int | None = None  # vpdq: how many distinct frames of the upload matched
    quality: int | None = None  # PDQ quality of the upload's hash that matched (its variant's)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bank": self.bank,
            "bank_action": self.bank_action.value,
            "entry_id": self.entry_id,
            "signal": self.signal,
            "distance": self.distance,
            "variant": self.variant,
        }
        if self.quarantined:
            out["quarantined"] = True
        if self.share is not None:
            out["share"] = round(self.share, 4)
        if self.frames is not None:
            out["frames"] = self.frames
        if self.quality is not None:
            out["quality"] = self.quality
        return out


@dataclass(frozen=True)
class Verdict:
    route: Route
    priority: int  # 0..100, higher is reviewed first
    reason: str  # machine-readable reason code
    matches: tuple[Match, ...] = ()
    score: float | None = None
