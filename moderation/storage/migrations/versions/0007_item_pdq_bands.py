"""near-duplicate lookup keys of open items (multi-index hashing): the 16-bit
slices of each queued image's PDQ hash and the first 32 bits of its SHA-256

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# PDQ_MIN_QUALITY's default when this migration was written.
MIN_QUALITY = 50
BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "item_pdq_bands",
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("band", sa.Integer(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", "band"),
    )
    op.create_index("ix_item_pdq_bands_band_value", "item_pdq_bands", ["band", "value"])
    _backfill(op.get_bind())


def _backfill(conn: Any) -> None:
    """Keys for the items already open, so that new uploads join their groups."""
    items = sa.table(
        "items",
        sa.column("id", sa.BigInteger()),
        sa.column("state", sa.String()),
        sa.column("sha256", sa.String()),
        sa.column("pdq", sa.String()),
        sa.column("pdq_quality", sa.Integer()),
        sa.column("vpdq", sa.Text()),
    )
    bands = sa.table(
        "item_pdq_bands", sa.column("item_id", sa.BigInteger()), sa.column("band"), sa.column("value")
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(items.c.id, items.c.sha256, items.c.pdq, items.c.pdq_quality, items.c.vpdq)
            .where(items.c.state.in_(("pending", "claimed")), items.c.id > last)
            .order_by(items.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        values: list[dict[str, int]] = []
        for item_id, sha256, pdq, quality, vpdq in rows:
            values.extend(
                {"item_id": item_id, "band": b, "value": v} for b, v in _keys(sha256, pdq, quality, vpdq)
            )
        if values:
            conn.execute(bands.insert(), values)
        last = rows[-1][0]


def _keys(sha256: str, pdq: str, quality: int, vpdq: str | None) -> list[tuple[int, int]]:
    keys: list[tuple[int, int]] = []
    if not vpdq and pdq and len(pdq) == 64 and quality >= MIN_QUALITY:
        try:
            keys.extend((i, int(pdq[i * 4 : i * 4 + 4], 16)) for i in range(16))
        except ValueError:
            keys = []
    if sha256 and len(sha256) >= 8:
        try:
            keys.append((16, int.from_bytes(bytes.fromhex(sha256[:8]), "big", signed=True)))
        except ValueError:
            pass
    return keys


def downgrade() -> None:
    op.drop_index("ix_item_pdq_bands_band_value", "item_pdq_bands")
    op.drop_table("item_pdq_bands")
