"""The product store: products, their attributes and the precomputed similar lists.

One class over SQLAlchemy 2 Core/ORM. Nothing here is SQLite-specific, so a ``postgresql://`` URL works
through the same code; JSON attribute filters are evaluated in Python after a portable SQL prefilter.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from lookalike.store.migrate import default_store_url, engine_url, upgrade
from lookalike.store.tables import Event, Product, SimilarProduct

log = logging.getLogger(__name__)


@dataclass
class ProductRow:
    id: str
    title: str = ""
    category: str | None = None
    image: str | None = None
    image_hash: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_orm(cls, p: Product) -> ProductRow:
        return cls(p.id, p.title, p.category, p.image, p.image_hash, dict(p.attributes or {}))


@dataclass
class SimilarRow:
    product_id: str
    rank: int
    similar_id: str
    score: float
    similarity_pct: float


def sqlite_url(workspace: Path) -> str:
    return f"sqlite:///{Path(workspace).resolve() / 'lookalike.db'}"


class Store:
    """Products and similar lists in any SQLAlchemy database (SQLite by default)."""

    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = url.startswith("sqlite")
        self.engine: Engine = create_engine(
            engine_url(url), future=True, connect_args={"check_same_thread": False} if is_sqlite else {},
            pool_pre_ping=not is_sqlite,  # a server restart must not leave dead pooled connections behind
        )
        if is_sqlite:
            # WAL lets the API read while a batch job writes; synchronous=FULL keeps acknowledged writes.
            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        upgrade(self.engine)  # Alembic (store/migrate.py): creates an empty store, migrates an older one
        self._session = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def for_workspace(cls, workspace: Path, url: str | None = None) -> Store:
        Path(workspace).mkdir(parents=True, exist_ok=True)
        return cls(url or default_store_url() or sqlite_url(workspace))

    def session(self) -> Session:
        return self._session()

    # ---- products -------------------------------------------------------------------------------
    def upsert_products(self, rows: Iterable[ProductRow], batch: int = 2000) -> int:
        """Insert or replace products by id (portable: select existing ids, then add/merge)."""
        n = 0
        chunk: list[ProductRow] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch:
                n += self._upsert_chunk(chunk)
                chunk = []
        if chunk:
            n += self._upsert_chunk(chunk)
        return n

    def _upsert_chunk(self, rows: Sequence[ProductRow]) -> int:
        with self.session() as s, s.begin():
            existing = {p.id: p for p in s.scalars(select(Product).where(Product.id.in_([r.id for r in rows])))}
            for r in rows:
                p = existing.get(r.id)
                if p is None:
                    s.add(Product(id=r.id, title=r.title, category=r.category, image=r.image,
                                  image_hash=r.image_hash, attributes=r.attributes, deleted=False))
                else:
                    p.title, p.category, p.image = r.title, r.category, r.image
                    p.image_hash, p.attributes, p.deleted = r.image_hash, r.attributes, False
        return len(rows)

    def get_product(self, product_id: str) -> ProductRow | None:
        with self.session() as s:
            p = s.get(Product, product_id)
            return None if p is None or p.deleted else ProductRow.from_orm(p)

    def get_products(self, ids: Sequence[str]) -> dict[str, ProductRow]:
        out: dict[str, ProductRow] = {}
        with self.session() as s:
            for i in range(0, len(ids), 900):  # stay under SQLite's bound-parameter limit
                q = select(Product).where(Product.id.in_(ids[i : i + 900]), Product.deleted.is_(False))
                out.update({p.id: ProductRow.from_orm(p) for p in s.scalars(q)})
        return out

    def iter_products(self, batch: int = 5000) -> Iterator[ProductRow]:
        with self.session() as s:
            q = select(Product).where(Product.deleted.is_(False)).order_by(Product.id)
            for p in s.scalars(q.execution_options(yield_per=batch)):
                yield ProductRow.from_orm(p)

    def count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Product).where(Product.deleted.is_(False))) or 0

    def categories(self) -> list[tuple[str, int]]:
        with self.session() as s:
            q = (select(Product.category, func.count()).where(Product.deleted.is_(False))
                 .group_by(Product.category).order_by(Product.category))
            return [(c, n) for c, n in s.execute(q) if c is not None]

    def list_products(
        self, limit: int = 24, offset: int = 0, category: str | None = None, q: str | None = None,
        attrs: dict[str, str] | None = None,
    ) -> tuple[list[ProductRow], int]:
        """A page of products plus the total that match; attribute filters compare as strings."""
        stmt = select(Product).where(Product.deleted.is_(False))
        if category:
            stmt = stmt.where(Product.category == category)
        if q:
            for word in q.split():
                stmt = stmt.where(or_(Product.title.ilike(f"%{word}%"), Product.id == word))
        stmt = stmt.order_by(Product.id)
        with self.session() as s:
            if not attrs:
                total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
                rows = [ProductRow.from_orm(p) for p in s.scalars(stmt.limit(limit).offset(offset))]
                return rows, total
            # JSON operators differ between databases; filter attributes in Python on the SQL prefilter.
            matched = [ProductRow.from_orm(p) for p in s.scalars(stmt)
                       if all(str((p.attributes or {}).get(k)) == v for k, v in attrs.items())]
            return matched[offset : offset + limit], len(matched)

    def update_attributes(self, product_id: str, changes: dict[str, Any]) -> ProductRow | None:
        with self.session() as s, s.begin():
            p = s.get(Product, product_id)
            if p is None or p.deleted:
                return None
            attrs = dict(p.attributes or {})
            for k, v in changes.items():
                if v is None:
                    attrs.pop(k, None)
                else:
                    attrs[k] = v
            p.attributes = attrs
            return ProductRow.from_orm(p)

    def delete_products(self, ids: Sequence[str]) -> int:
        with self.session() as s, s.begin():
            rows = list(s.scalars(select(Product).where(Product.id.in_(ids), Product.deleted.is_(False))))
            for p in rows:
                p.deleted = True
            s.execute(delete(SimilarProduct).where(or_(SimilarProduct.product_id.in_(ids),
                                                       SimilarProduct.similar_id.in_(ids))))
            return len(rows)

    # ---- similar lists --------------------------------------------------------------------------
    def replace_similar(self, encoder: str, rows: Iterable[SimilarRow], clear: bool = True, batch: int = 20000) -> int:
        """Write similar lists for ``encoder``; ``clear`` drops that encoder's previous lists first."""
        n = 0
        with self.session() as s, s.begin():
            if clear:
                s.execute(delete(SimilarProduct).where(SimilarProduct.encoder == encoder))
            buf: list[dict[str, Any]] = []
            for r in rows:
                buf.append({"encoder": encoder, "product_id": r.product_id, "rank": r.rank, "similar_id": r.similar_id,
                            "score": float(r.score), "similarity_pct": float(r.similarity_pct)})
                if len(buf) >= batch:
                    s.execute(SimilarProduct.__table__.insert(), buf)
                    n += len(buf)
                    buf = []
            if buf:
                s.execute(SimilarProduct.__table__.insert(), buf)
                n += len(buf)
        return n

    def replace_similar_for(self, encoder: str, product_ids: Sequence[str], rows: Iterable[SimilarRow]) -> int:
        """Replace just the lists of ``product_ids`` (incremental updates)."""
        with self.session() as s, s.begin():
            s.execute(delete(SimilarProduct).where(SimilarProduct.encoder == encoder,
                                                   SimilarProduct.product_id.in_(list(product_ids))))
            buf = [{"encoder": encoder, "product_id": r.product_id, "rank": r.rank, "similar_id": r.similar_id,
                    "score": float(r.score), "similarity_pct": float(r.similarity_pct)} for r in rows]
            if buf:
                s.execute(SimilarProduct.__table__.insert(), buf)
            return len(buf)

    def get_similar(self, encoder: str, product_id: str) -> list[SimilarRow]:
        with self.session() as s:
            q = (select(SimilarProduct).where(SimilarProduct.encoder == encoder,
                                              SimilarProduct.product_id == product_id)
                 .order_by(SimilarProduct.rank))
            return [SimilarRow(r.product_id, r.rank, r.similar_id, r.score, r.similarity_pct) for r in s.scalars(q)]

    def iter_similar(self, encoder: str) -> Iterator[SimilarRow]:
        with self.session() as s:
            q = (select(SimilarProduct).where(SimilarProduct.encoder == encoder)
                 .order_by(SimilarProduct.product_id, SimilarProduct.rank))
            for r in s.scalars(q.execution_options(yield_per=20000)):
                yield SimilarRow(r.product_id, r.rank, r.similar_id, r.score, r.similarity_pct)

    def similar_table(self, encoder: str, product_ids: Sequence[str] | None = None,
                      ) -> list[tuple[str, int, str, float]]:
        """(product_id, rank, similar_id, score) of ``encoder``, every list or those of ``product_ids``, as
        plain tuples: loading a million rows through the ORM would take minutes at start-up."""
        q = select(SimilarProduct.product_id, SimilarProduct.rank, SimilarProduct.similar_id,
                   SimilarProduct.score).where(SimilarProduct.encoder == encoder)
        with self.engine.connect() as c:
            if product_ids is None:
                return [tuple(r) for r in c.execute(q)]  # type: ignore[misc]
            ids = list(product_ids)
            return [tuple(r) for a in range(0, len(ids), 900)  # type: ignore[misc]
                    for r in c.execute(q.where(SimilarProduct.product_id.in_(ids[a : a + 900])))]

    def count_similar_sources(self, encoder: str) -> int:
        with self.session() as s:
            q = select(func.count(func.distinct(SimilarProduct.product_id))).where(SimilarProduct.encoder == encoder)
            return s.scalar(q) or 0

    # ---- events ---------------------------------------------------------------------------------
    def add_event(self, type: str, product_id: str, source_product_id: str | None, position: int | None) -> None:
        with self.session() as s, s.begin():
            s.add(Event(type=type, product_id=product_id, source_product_id=source_product_id, position=position))

    def event_counts(self, up_to: int | None = None) -> list[tuple[str, str, str | None, int | None, int]]:
        """(type, product_id, source_product_id, position, count) over every stored event (with an id up to
        ``up_to``), aggregated in SQL."""
        q = select(Event.type, Event.product_id, Event.source_product_id, Event.position, func.count())
        if up_to is not None:
            q = q.where(Event.id <= up_to)
        q = q.group_by(Event.type, Event.product_id, Event.source_product_id, Event.position)
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(q)]  # type: ignore[misc]

    def max_event_id(self) -> int:
        with self.engine.connect() as c:
            return int(c.scalar(select(func.max(Event.id))) or 0)

    def events_after(self, after: int) -> list[tuple[int, str, str, str | None, int | None]]:
        """(id, type, product_id, source_product_id, position) of the events with an id above ``after``."""
        q = (select(Event.id, Event.type, Event.product_id, Event.source_product_id, Event.position)
             .where(Event.id > after).order_by(Event.id))
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(q)]  # type: ignore[misc]
