"""classifier verdicts: per-model scores and versions, body-part regions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as b:
        b.alter_column("model_version", type_=sa.String(255), existing_type=sa.String(100))
        b.add_column(sa.Column("model_scores", sa.JSON(), nullable=True))
        b.add_column(sa.Column("regions", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE items SET model_version = substr(model_version, 1, 100)")
    with op.batch_alter_table("items") as b:
        b.drop_column("regions")
        b.drop_column("model_scores")
        b.alter_column("model_version", type_=sa.String(100), existing_type=sa.String(255))
