"""personal API tokens (scope review, bound to a user); login lockout per account
and source; the per-address login rate limit as a token bucket

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import moderation.storage.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UTC = moderation.storage.models.UTCDateTime
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as b:
        b.add_column(sa.Column("user_id", BigId, nullable=True))
        b.create_foreign_key("fk_api_tokens_user_id", "users", ["user_id"], ["id"], ondelete="CASCADE")
        b.create_index("ix_api_tokens_user_id", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("user_id", BigId, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTC(timezone=True), nullable=True),
        sa.Column("reset_at", UTC(timezone=True), nullable=True),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "source"),
    )
    op.create_index("ix_login_failures_updated_at", "login_failures", ["updated_at"])
    # The per-minute windows become one token bucket per address. Counts are
    # short-lived by nature: nothing is carried over.
    op.drop_index("ix_login_attempts_window_start", "login_attempts")
    op.drop_table("login_attempts")
    op.create_table(
        "login_attempts",
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("tat", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_index("ix_login_attempts_tat", "login_attempts", ["tat"])


def downgrade() -> None:
    op.drop_index("ix_login_attempts_tat", "login_attempts")
    op.drop_table("login_attempts")
    op.create_table(
        "login_attempts",
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("window_start", UTC(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address", "window_start"),
    )
    op.create_index("ix_login_attempts_window_start", "login_attempts", ["window_start"])
    op.drop_index("ix_login_failures_updated_at", "login_failures")
    op.drop_table("login_failures")
    # Personal tokens have no meaning without their user: they go with the column.
    op.execute("DELETE FROM api_tokens WHERE user_id IS NOT NULL")
    with op.batch_alter_table("api_tokens") as b:
        b.drop_index("ix_api_tokens_user_id")
        b.drop_constraint("fk_api_tokens_user_id", type_="foreignkey")
        b.drop_column("user_id")
