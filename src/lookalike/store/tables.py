"""SQLAlchemy 2 tables: portable types only, so SQLite and PostgreSQL run the same code."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(256), index=True, nullable=True)
    # relative to the catalogue root, or an http(s) URL
    image: Mapped[str | None] = mapped_column(Text, nullable=True)
    image_hash: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    attributes: Mapped[dict] = mapped_column(JSON, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class SimilarProduct(Base):
    __tablename__ = "similar_products"

    encoder: Mapped[str] = mapped_column(String(256), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    similar_id: Mapped[str] = mapped_column(String(128), index=True)
    score: Mapped[float] = mapped_column(Float)
    similarity_pct: Mapped[float] = mapped_column(Float)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(32))
    product_id: Mapped[str] = mapped_column(String(128), index=True)
    source_product_id: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    position: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JournalEntry(Base):
    """Write-ahead log of vector changes, committed with the product change it belongs to.

    The vector files and the index are rewritten later (store/journal.py); until then this row is the only
    durable copy of a new vector, so a crash between the two loses nothing.
    """

    __tablename__ = "journal"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    encoder: Mapped[str] = mapped_column(String(256), index=True)
    op: Mapped[str] = mapped_column(String(16))  # "add" (a new or re-embedded vector) or "remove"
    product_id: Mapped[str] = mapped_column(String(128))
    image_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32 bytes, for "add"
    flushed: Mapped[bool] = mapped_column(Boolean, default=False)  # copied into the vector files
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChangeEntry(Base):
    """The change feed: every acknowledged catalogue write, in commit order, for the other replicas.

    A replica serving the same store replays the entries it has not seen (live/follower.py): the product as it
    was written, its new vector when the image changed, and which similar lists the write replaced (read back
    from ``similar_products``). Entries are pruned after a retention period, never by the index sync.
    """

    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    encoder: Mapped[str] = mapped_column(String(256), index=True)
    op: Mapped[str] = mapped_column(String(16))  # "vector" (added or new image), "fields", "deleted"
    product_id: Mapped[str] = mapped_column(String(128))
    product: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # the row as written; None for "deleted"
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # float32 bytes, for "vector"
    lists: Mapped[list] = mapped_column(JSON, default=list)  # product ids whose similar lists were replaced
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


Index("ix_similar_lookup", SimilarProduct.encoder, SimilarProduct.product_id)
