"""dead letters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import moderation.storage.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "dead_letters",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("source_topic", sa.String(length=255), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("source_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("error_class", sa.String(length=50), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("created_at", moderation.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", moderation.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "source_topic",
            "source_partition",
            "source_offset",
            "source_timestamp",
            name="uq_dead_letter_source",
        ),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dead_letters_event_id"), ["event_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dead_letters_published_at"), ["published_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dead_letters_published_at"))
        batch_op.drop_index(batch_op.f("ix_dead_letters_event_id"))

    op.drop_table("dead_letters")
