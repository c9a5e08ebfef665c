"""The vector journal of the live catalogue (issue 6).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a store made by create_all from a tree that already had the journal is stamped 0001 but holds it
    if sa.inspect(op.get_bind()).has_table("journal"):
        return
    op.create_table(
        "journal",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("encoder", sa.String(256), nullable=False),
        sa.Column("op", sa.String(16), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("image_hash", sa.String(64), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("flushed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_journal_encoder", "journal", ["encoder"])


def downgrade() -> None:
    op.drop_table("journal")
