"""The store as it stood before migrations: products, similar lists, events.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("category", sa.String(256), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column("image_hash", sa.String(64), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_products_category", "products", ["category"])
    op.create_index("ix_products_image_hash", "products", ["image_hash"])
    op.create_index("ix_products_deleted", "products", ["deleted"])
    op.create_table(
        "similar_products",
        sa.Column("encoder", sa.String(256), primary_key=True),
        sa.Column("product_id", sa.String(128), primary_key=True),
        sa.Column("rank", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("similar_id", sa.String(128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("similarity_pct", sa.Float(), nullable=False),
    )
    op.create_index("ix_similar_products_similar_id", "similar_products", ["similar_id"])
    op.create_index("ix_similar_lookup", "similar_products", ["encoder", "product_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("source_product_id", sa.String(128), nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_events_product_id", "events", ["product_id"])
    op.create_index("ix_events_source_product_id", "events", ["source_product_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("similar_products")
    op.drop_table("products")
