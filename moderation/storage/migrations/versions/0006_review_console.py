"""review console: queue rank and SLA deadline, near-duplicate groups, four-eyes
reviews, exclusions (skips), appeals, exposure sessions, user preferences,
evidence with chain of custody, an append-only audit log; tier "admin" becomes
"senior"

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import moderation.storage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC_DT = moderation.storage.models.UTCDateTime
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # ids: SQLite's INTEGER autoincrements
PENDING = sa.text("state = 'pending'")
# The defaults of PRIORITY_POINT_MINUTES and SLA_HOURS when this migration was written.
POINT = timedelta(minutes=15)
SLA = timedelta(hours=48)
APPEND_ONLY = ("audit_log", "custody_records")
BACKFILL_BATCH = 5000


def upgrade() -> None:
    with op.batch_alter_table("items") as b:
        b.add_column(sa.Column("due_at", UTC_DT(timezone=True), nullable=True))
        b.add_column(sa.Column("rank_at", UTC_DT(timezone=True), nullable=True))
        b.add_column(sa.Column("group_key", sa.String(100), nullable=True))
        b.add_column(sa.Column("first_review", sa.JSON(), nullable=True))
        b.drop_index("ix_items_claim")
    op.create_index(
        "ix_items_queue_rank",
        "items",
        ["tier", "rank_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index(
        "ix_items_queue_due",
        "items",
        ["tier", "due_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index("ix_items_state_lease", "items", ["state", "lease_expires_at"])
    op.create_index("ix_items_group_key", "items", ["group_key"])
    op.execute("UPDATE items SET tier = 'senior' WHERE tier = 'admin'")
    _backfill_queue_order()

    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("preferences", sa.JSON(), nullable=False, server_default="{}"))

    op.create_table(
        "item_exclusions",
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("why", sa.String(20), nullable=False),
        sa.Column("at", UTC_DT(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "user_id"),
    )
    op.create_table(
        "exposure_sessions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("user_id", BIG_ID, nullable=False),
        sa.Column("started_at", UTC_DT(timezone=True), nullable=False),
        sa.Column("last_seen_at", UTC_DT(timezone=True), nullable=False),
        sa.Column("items_viewed", sa.Integer(), nullable=False),
        sa.Column("revealed_seconds", sa.Float(), nullable=False),
        sa.Column("break_prompted_at", UTC_DT(timezone=True), nullable=True),
        sa.Column("ended_at", UTC_DT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_exposure_sessions_user", "exposure_sessions", ["user_id", "ended_at"])
    op.create_table(
        "appeals",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("appeal_id", sa.String(200), nullable=False),
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("submitted_by", sa.String(200), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("previous_decision_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC_DT(timezone=True), nullable=False),
        sa.Column("resolved_at", UTC_DT(timezone=True), nullable=True),
        sa.Column("decision_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("appeal_id"),
    )
    op.create_index("ix_appeals_item_id", "appeals", ["item_id"])
    op.create_table(
        "evidence",
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("created_at", UTC_DT(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("media_sha256", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("hold_reason", sa.Text(), nullable=False),
        sa.Column("retain_until", UTC_DT(timezone=True), nullable=False),
        sa.Column("purged_at", UTC_DT(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("item_id"),
    )
    op.create_index("ix_evidence_retain_until", "evidence", ["retain_until"])
    op.create_table(
        "custody_records",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("item_id", BIG_ID, nullable=False),
        sa.Column("at", UTC_DT(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_custody_records_item_id", "custody_records", ["item_id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    for table in APPEND_ONLY:
        _forbid_changes(table)


def _backfill_queue_order() -> None:
    """Rank and SLA deadline for the items already open, with the defaults."""
    items = sa.table(
        "items",
        sa.column("id", sa.BigInteger()),
        sa.column("state", sa.String()),
        sa.column("priority", sa.Integer()),
        sa.column("created_at", UTC_DT(timezone=True)),
        sa.column("rank_at", UTC_DT(timezone=True)),
        sa.column("due_at", UTC_DT(timezone=True)),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(items.c.id, items.c.priority, items.c.created_at).where(
            items.c.state.in_(["pending", "claimed"])
        )
    ).all()
    # One executemany per batch, not a round trip per open item.
    update = (
        items.update()
        .where(items.c.id == sa.bindparam("item_id"))
        .values(rank_at=sa.bindparam("rank"), due_at=sa.bindparam("due"))
    )
    for start in range(0, len(rows), BACKFILL_BATCH):
        values = []
        for item_id, priority, created in rows[start : start + BACKFILL_BATCH]:
            created = created or datetime.now(UTC)
            values.append(
                {"item_id": item_id, "rank": created - (priority or 0) * POINT, "due": created + SLA}
            )
        conn.execute(update, values)


def _forbid_changes(table: str) -> None:
    """Rows of ``table`` may be inserted, never updated or deleted (TRUNCATE, for
    tests and retention by a DBA, still works)."""
    message = f"{table} is append-only"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )


def _allow_changes(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
    else:
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")


def downgrade() -> None:
    for table in APPEND_ONLY:
        _allow_changes(table)
    op.drop_index("ix_audit_log_action", "audit_log")
    op.drop_index("ix_audit_log_actor", "audit_log")
    op.drop_index("ix_audit_log_at", "audit_log")
    op.drop_index("ix_custody_records_item_id", "custody_records")
    op.drop_table("custody_records")
    op.drop_index("ix_evidence_retain_until", "evidence")
    op.drop_table("evidence")
    op.drop_index("ix_appeals_item_id", "appeals")
    op.drop_table("appeals")
    op.drop_index("ix_exposure_sessions_user", "exposure_sessions")
    op.drop_table("exposure_sessions")
    op.drop_table("item_exclusions")
    with op.batch_alter_table("users") as b:
        b.drop_column("preferences")
    # Tiers that did not exist before: back to the queues that did.
    op.execute("UPDATE items SET tier = 'admin' WHERE tier IN ('senior', 'restricted')")
    op.execute("UPDATE items SET tier = 'moderator' WHERE tier IN ('second_review', 'appeal')")
    op.drop_index("ix_items_group_key", "items")
    op.drop_index("ix_items_state_lease", "items")
    op.drop_index("ix_items_queue_due", "items")
    op.drop_index("ix_items_queue_rank", "items")
    with op.batch_alter_table("items") as b:
        b.create_index("ix_items_claim", ["state", "tier", "priority", "created_at"], unique=False)
        b.drop_column("first_review")
        b.drop_column("group_key")
        b.drop_column("rank_at")
        b.drop_column("due_at")
