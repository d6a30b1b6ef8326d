"""Database schema. Changes go through an Alembic migration in migrations/versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite has no BIGINT autoincrement; PostgreSQL gets BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))  # domain.Role: moderator | senior | admin | auditor
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # The account-wide lockout before migration 0009; unused since (the lockout is
    # per account and source: LoginFailure), kept so that a downgrade loses nothing.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Copied into each console session at login; bumping it (new password,
    # deactivation) ends every session the user has open.
    session_version: Mapped[int] = mapped_column(Integer, default=0)
    # Console preferences (wellbeing: blur, greyscale, reveal mode); unset keys take the defaults.
    preferences: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoginAttempt(Base):
    """The per-address login rate limit, one token bucket per client address
    (storage/login_attempts.py): ``tat`` is when the bucket is empty again, in
    seconds since the epoch."""

    __tablename__ = "login_attempts"
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    tat: Mapped[float] = mapped_column(Float, index=True)


class LoginFailure(Base):
    """Wrong passwords for one account from one source (a client address, an
    IPv6 /64), and the lock they set for that source only (storage/lockouts.py)."""

    __tablename__ = "login_failures"
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row, since the last success or lock
    lockouts: Mapped[int] = mapped_column(Integer, default=0)  # locks in a row: each lasts twice as long
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last success or lock from this source: failures that began before it do not count.
    reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Bank(Base):
    __tablename__ = "banks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    action: Mapped[str] = mapped_column(String(20))  # auto_remove | review_high | review | allow
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Per-signal thresholds: PDQ Hamming distance (images and video frames), and
    # the share of video frames that must match both ways.
    pdq_distance: Mapped[int] = mapped_column(Integer, default=31)
    vpdq_share: Mapped[float] = mapped_column(Float, default=0.8)
    enabled: Mapped[bool] = mapped_column(default=True)
    source: Mapped[str] = mapped_column(String(20), default="local")  # local | stopncii | ncmec | file_import
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BankEntry(Base):
    __tablename__ = "bank_entries"
    __table_args__ = (
        UniqueConstraint("bank_id", "digest", name="uq_bank_entry_digest"),
        Index("ix_bank_entries_bank_status", "bank_id", "status", "id"),
        Index("ix_bank_entries_source_ref", "bank_id", "source_ref"),
        Index("ix_bank_entries_case_id", "case_id"),
        Index("ix_bank_entries_value_prefix", "signal", "value_prefix"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="CASCADE"))
    signal: Mapped[str] = mapped_column(String(16))  # sha256 | md5 | pdq | vpdq
    value: Mapped[str] = mapped_column(Text)
    # sha256(signal:value): uniqueness for values too long to index (vPDQ frame lists).
    digest: Mapped[str] = mapped_column(String(64))
    value_prefix: Mapped[str] = mapped_column(String(64), default="")  # first 64 chars, for search
    status: Mapped[str] = mapped_column(String(20), default="active")  # see domain.EntryStatus
    source_ref: Mapped[str] = mapped_column(String(200), default="")
    case_id: Mapped[str] = mapped_column(String(200), default="")
    source_item_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    added_by: Mapped[str] = mapped_column(String(100), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status_changed_by: Mapped[str] = mapped_column(String(100), default="")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    match_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_matched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BankChange(Base):
    """The workers' change feed: one row per bank or entry change, ids from one
    sequence. Readers re-read the row's current state, so a change row carries no data."""

    __tablename__ = "bank_changes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    bank_id: Mapped[int] = mapped_column(BigInteger)
    entry_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class BankEntryHits(Base):
    """Matches per entry per time window: flood control counts these."""

    __tablename__ = "bank_entry_hits"
    entry_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    hits: Mapped[int] = mapped_column(BigInteger, default=0)


class ExchangeState(Base):
    """Incremental sync state of one hash exchange (StopNCII, NCMEC)."""

    __tablename__ = "exchange_state"
    exchange: Mapped[str] = mapped_column(String(50), primary_key=True)
    bank: Mapped[str] = mapped_column(String(100))
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ExchangeFeedback(Base):
    """Feedback owed to an exchange after a moderator's decision (an outbox)."""

    __tablename__ = "exchange_feedback"
    __table_args__ = (Index("ix_exchange_feedback_item", "item_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(50))
    source_ref: Mapped[str] = mapped_column(String(200))
    entry_id: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[int] = mapped_column(BigInteger)
    blocked: Mapped[bool] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # set when the exchange refused it


class ApiToken(Base):
    """A service or trusted-flagger token. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    bank: Mapped[str | None] = mapped_column(String(100), nullable=True)  # submissions land here
    # A personal token (scope ``review``) acts as this user, with the user's role.
    user_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Item(Base):
    """One upload event's outcome. ``event_id`` is unique: redelivery is a no-op."""

    __tablename__ = "items"
    __table_args__ = (
        # Claiming walks these two (open items only): the near-breach items by SLA
        # deadline, then everything by queue rank. See storage/queue.py.
        Index(
            "ix_items_queue_rank",
            "tier",
            "rank_at",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index(
            "ix_items_queue_due",
            "tier",
            "due_at",
            "id",
            postgresql_where=text("state = 'pending'"),
            sqlite_where=text("state = 'pending'"),
        ),
        Index("ix_items_state_lease", "state", "lease_expires_at"),
        Index("ix_items_group_key", "group_key"),
        Index("ix_items_content_id", "content_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    content_id: Mapped[str] = mapped_column(String(200))
    uploader_id: Mapped[str] = mapped_column(String(200))
    media_url: Mapped[str] = mapped_column(Text)
    media_type: Mapped[str] = mapped_column(String(100))
    event: Mapped[dict[str, Any]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    pdq: Mapped[str] = mapped_column(String(64))
    pdq_quality: Mapped[int] = mapped_column(Integer)
    vpdq: Mapped[str | None] = mapped_column(Text, nullable=True)  # video frame hashes, vPDQ text
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str] = mapped_column(String(255), default="")  # every model's, joined by +
    model_scores: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)  # per model
    regions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)  # body-part boxes
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    route: Mapped[str] = mapped_column(String(20))  # auto_remove | review | allow
    reason: Mapped[str] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20))  # pending | claimed | decided | closed
    tier: Mapped[str] = mapped_column(String(20), default="moderator")  # domain.Tier
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Queue order (storage/queue.py): the SLA deadline, and the rank key
    # created_at - priority * PRIORITY_POINT_MINUTES (earlier rank is served first).
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rank_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Near-duplicates share a key (same bank entry, same hashes): one decision for the group.
    group_key: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Four eyes: the first moderator's removal, waiting for a second moderator.
    first_review: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class ItemExclusion(Base):
    """Items a user is not served again: skipped, first reviewer of a four-eyes
    removal, or an earlier decider of an appealed item."""

    __tablename__ = "item_exclusions"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    why: Mapped[str] = mapped_column(String(20))  # skipped | first_review | decided
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ExposureSession(Base):
    """A moderator's exposure since their last break: items viewed, seconds of
    revealed media. ``ended_at`` is set when a break is acknowledged."""

    __tablename__ = "exposure_sessions"
    __table_args__ = (Index("ix_exposure_sessions_user", "user_id", "ended_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    items_viewed: Mapped[int] = mapped_column(Integer, default=0)
    revealed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    break_prompted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Appeal(Base):
    """An appeal against a decision; ``appeal_id`` makes a redelivered appeal a no-op."""

    __tablename__ = "appeals"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    appeal_id: Mapped[str] = mapped_column(String(200), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    source: Mapped[str] = mapped_column(String(20))  # kafka | api
    submitted_by: Mapped[str] = mapped_column(String(200), default="")
    statement: Mapped[str] = mapped_column(Text, default="")
    previous_decision_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    decision_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Evidence(Base):
    """Evidence preserved before a removal is published. The media bytes are
    encrypted (AES-256-GCM, ``EVIDENCE_KEY``); ``manifest`` holds hashes, event
    metadata, signals, the decision and the moderator."""

    __tablename__ = "evidence"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    key_id: Mapped[str] = mapped_column(String(32))  # which key encrypted it (a fingerprint)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # None once purged
    content_type: Mapped[str] = mapped_column(String(100))
    media_sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    legal_hold: Mapped[bool] = mapped_column(default=False)
    hold_reason: Mapped[str] = mapped_column(Text, default="")
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CustodyRecord(Base):
    """Chain of custody: every handling of a piece of evidence. Each record's
    ``record_hash`` covers its content and the previous record's hash."""

    __tablename__ = "custody_records"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50))  # preserved | viewed | exported | hold | release | purged
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    record_hash: Mapped[str] = mapped_column(String(64))


class ItemMedia(Base):
    """Media bytes of queued items, so reviewers never fetch from uploader-controlled URLs."""

    __tablename__ = "item_media"
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Decision(Base):
    """A decision and its outbox state: ``published_at`` is set once Kafka acknowledged it;
    ``set_aside_at`` (with the broker's reason) once the broker refused it for good, and
    ``discarded_at`` when an admin chose never to publish it (storage/set_aside.py)."""

    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    content_id: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(100))
    moderator: Mapped[str | None] = mapped_column(String(100), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    set_aside_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    set_aside_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    discarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DeadLetter(Base):
    """An event that can never be processed, and its dead-letter outbox state.

    Unique by source position (topic, partition, offset and the record's
    timestamp, which tells apart offsets reused by a recreated topic)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint(
            "source_topic",
            "source_partition",
            "source_offset",
            "source_timestamp",
            name="uq_dead_letter_source",
        ),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source_topic: Mapped[str] = mapped_column(String(255))
    source_partition: Mapped[int] = mapped_column(Integer)
    source_offset: Mapped[int] = mapped_column(BigInteger)
    source_timestamp: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    error_class: Mapped[str] = mapped_column(String(50))
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    # As for decisions: refused by the broker for good, or discarded by an admin.
    set_aside_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    set_aside_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    discarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class AuditRecord(Base):
    """Append-only: rows are inserted, never updated or deleted by the application."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)
    action: Mapped[str] = mapped_column(String(50), index=True)
    item_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ItemPdqBand(Base):
    """Near-duplicate lookup keys of open queued items (multi-index hashing, see
    storage/groups.py): bands 0..15 hold the 16-bit slices of the item's PDQ hash,
    band 16 the first 32 bits of its SHA-256. Rows go once the item is decided."""

    __tablename__ = "item_pdq_bands"
    __table_args__ = (Index("ix_item_pdq_bands_band_value", "band", "value"),)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    band: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)
