"""bank management: thresholds, entry lifecycle, change feed, flood control,
exchanges, API tokens, video hashes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

import moderation.storage.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC = moderation.storage.models.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("banks") as b:
        b.add_column(sa.Column("pdq_distance", sa.Integer(), nullable=False, server_default="31"))
        b.add_column(sa.Column("vpdq_share", sa.Float(), nullable=False, server_default="0.8"))
        b.add_column(sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()))
        b.add_column(sa.Column("source", sa.String(20), nullable=False, server_default="local"))
        b.add_column(sa.Column("updated_at", UTC(timezone=True), nullable=True))

    with op.batch_alter_table("bank_entries") as b:
        b.alter_column("value", type_=sa.Text(), existing_type=sa.String(128))
        b.add_column(sa.Column("digest", sa.String(64), nullable=True))
        b.add_column(sa.Column("value_prefix", sa.String(64), nullable=False, server_default=""))
        b.add_column(sa.Column("status", sa.String(20), nullable=False, server_default="active"))
        b.add_column(sa.Column("source_ref", sa.String(200), nullable=False, server_default=""))
        b.add_column(sa.Column("case_id", sa.String(200), nullable=False, server_default=""))
        b.add_column(sa.Column("updated_at", UTC(timezone=True), nullable=True))
        b.add_column(sa.Column("status_changed_by", sa.String(100), nullable=False, server_default=""))
        b.add_column(sa.Column("status_reason", sa.Text(), nullable=False, server_default=""))
        b.add_column(sa.Column("withdrawn_at", UTC(timezone=True), nullable=True))
        b.add_column(sa.Column("match_count", sa.BigInteger(), nullable=False, server_default="0"))
        b.add_column(sa.Column("last_matched_at", UTC(timezone=True), nullable=True))

    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, signal, value FROM bank_entries")).all()
    for row_id, signal, value in rows:
        digest = hashlib.sha256(f"{signal}:{value}".encode()).hexdigest()
        conn.execute(
            sa.text(
                "UPDATE bank_entries SET digest = :d, value_prefix = :p, updated_at = created_at"
                " WHERE id = :i"
            ),
            {"d": digest, "p": value[:64], "i": row_id},
        )
    conn.execute(sa.text("UPDATE banks SET updated_at = created_at"))

    with op.batch_alter_table("bank_entries") as b:
        b.alter_column("digest", nullable=False, existing_type=sa.String(64))
        b.alter_column("updated_at", nullable=False, existing_type=UTC(timezone=True))
        b.drop_constraint("uq_bank_entry", type_="unique")
        b.create_unique_constraint("uq_bank_entry_digest", ["bank_id", "digest"])
        b.create_index("ix_bank_entries_bank_status", ["bank_id", "status", "id"])
        b.create_index("ix_bank_entries_source_ref", ["bank_id", "source_ref"])
        b.create_index("ix_bank_entries_case_id", ["case_id"])
        b.create_index("ix_bank_entries_value_prefix", ["signal", "value_prefix"])
    with op.batch_alter_table("banks") as b:
        b.alter_column("updated_at", nullable=False, existing_type=UTC(timezone=True))

    with op.batch_alter_table("items") as b:
        b.add_column(sa.Column("vpdq", sa.Text(), nullable=True))

    op.create_table(
        "bank_changes",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("bank_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "bank_entry_hits",
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("window_start", UTC(timezone=True), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", "window_start"),
    )
    op.create_table(
        "exchange_state",
        sa.Column("exchange", sa.String(50), nullable=False),
        sa.Column("bank", sa.String(100), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("last_sync_at", UTC(timezone=True), nullable=True),
        sa.Column("last_result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("exchange"),
    )
    op.create_table(
        "exchange_feedback",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("exchange", sa.String(50), nullable=False),
        sa.Column("source_ref", sa.String(200), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("sent_at", UTC(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_exchange_feedback_sent_at", "exchange_feedback", ["sent_at"])
    op.create_index("ix_exchange_feedback_item", "exchange_feedback", ["item_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("bank", sa.String(100), nullable=True),
        sa.Column("created_by", sa.String(100), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("revoked_at", UTC(timezone=True), nullable=True),
        sa.Column("last_used_at", UTC(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_exchange_feedback_item", "exchange_feedback")
    op.drop_index("ix_exchange_feedback_sent_at", "exchange_feedback")
    op.drop_table("exchange_feedback")
    op.drop_table("exchange_state")
    op.drop_table("bank_entry_hits")
    op.drop_table("bank_changes")
    with op.batch_alter_table("items") as b:
        b.drop_column("vpdq")
    # Lossy by nature: the older schema has no video hashes and two actions fewer.
    op.execute("DELETE FROM bank_entries WHERE signal = 'vpdq' OR length(value) > 128")
    op.execute("UPDATE banks SET action = 'review' WHERE action IN ('review_high', 'allow')")
    with op.batch_alter_table("bank_entries") as b:
        for ix in ("value_prefix", "case_id", "source_ref", "bank_status"):
            b.drop_index(f"ix_bank_entries_{ix}")
        b.drop_constraint("uq_bank_entry_digest", type_="unique")
        for col in (
            "last_matched_at",
            "match_count",
            "withdrawn_at",
            "status_reason",
            "status_changed_by",
            "updated_at",
            "case_id",
            "source_ref",
            "status",
            "value_prefix",
            "digest",
        ):
            b.drop_column(col)
        b.alter_column("value", type_=sa.String(128), existing_type=sa.Text())
        b.create_unique_constraint("uq_bank_entry", ["bank_id", "signal", "value"])
    with op.batch_alter_table("banks") as b:
        for col in ("updated_at", "source", "enabled", "vpdq_share", "pdq_distance"):
            b.drop_column(col)
