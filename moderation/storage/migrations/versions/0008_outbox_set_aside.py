"""outbox rows the broker refused for good: set aside with the reason, until an
admin retries or discards them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import moderation.storage.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("decisions", "dead_letters")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as b:
            b.add_column(
                sa.Column("set_aside_at", moderation.storage.models.UTCDateTime(timezone=True), nullable=True)
            )
            b.add_column(sa.Column("set_aside_reason", sa.Text(), nullable=True))
            b.add_column(
                sa.Column("discarded_at", moderation.storage.models.UTCDateTime(timezone=True), nullable=True)
            )
            b.create_index(f"ix_{table}_set_aside_at", ["set_aside_at"], unique=False)


def downgrade() -> None:
    # Before 0008 every unpublished row is produced again: a discarded row must
    # not be, so it goes down as published. Rows still set aside go down as
    # pending, and the broker refuses them again.
    for table in TABLES:
        op.execute(f"UPDATE {table} SET published_at = discarded_at WHERE discarded_at IS NOT NULL")
    for table in TABLES:
        with op.batch_alter_table(table) as b:
            b.drop_index(f"ix_{table}_set_aside_at")
            b.drop_column("discarded_at")
            b.drop_column("set_aside_reason")
            b.drop_column("set_aside_at")
