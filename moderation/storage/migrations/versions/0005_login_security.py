"""login security: account lockout, last login, session version, per-address
login attempt counts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import moderation.storage.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = moderation.storage.models.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("locked_until", UTC(timezone=True), nullable=True))
        b.add_column(sa.Column("last_login_at", UTC(timezone=True), nullable=True))
        b.add_column(sa.Column("session_version", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "login_attempts",
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("window_start", UTC(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address", "window_start"),
    )
    op.create_index("ix_login_attempts_window_start", "login_attempts", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_login_attempts_window_start", "login_attempts")
    op.drop_table("login_attempts")
    with op.batch_alter_table("users") as b:
        for col in ("session_version", "last_login_at", "locked_until", "failed_logins"):
            b.drop_column(col)
