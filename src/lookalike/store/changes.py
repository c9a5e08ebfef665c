"""The change feed (table ``changes``) and the one lock that serialises writers across processes.

Several ``lookalike serve`` processes (workers of one server, or replicas on several hosts) may serve one store.
Each keeps the catalogue in memory, so a write acknowledged by one must reach the others. The writer commits a
feed entry in the same transaction as the change; every process replays the entries it has not applied yet
before it answers a request (live/follower.py).

Replaying in ``seq`` order is only correct if ``seq`` order is commit order and each write was planned on the
state every earlier write left. So writers take ``process_lock`` for the whole plan-and-commit: a PostgreSQL
session advisory lock, or, for SQLite (processes on one host), an exclusive ``flock`` on a file next to the
database. Readers never take it.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from lookalike.store.sql import ProductRow, Store
from lookalike.store.tables import ChangeEntry

log = logging.getLogger(__name__)

OPS = ("vector", "fields", "deleted")
# PostgreSQL advisory lock keys (any constants distinct from store/migrate.py's)
LOCK_KEYS = {"write": 0x6C6B7772, "index-sync": 0x6C6B6978}


class StoreUnavailableError(RuntimeError):
    """The store could not be reached, so this process cannot tell whether it is up to date."""


@dataclass
class Change:
    seq: int
    op: str
    product: ProductRow | None
    product_id: str
    vector: np.ndarray | None
    lists: list[str]


def record(session: Session, encoder: str, op: str, product_id: str, product: ProductRow | None,
           vector: np.ndarray | None, lists: list[str]) -> ChangeEntry:
    """Add an entry inside the caller's transaction; its ``seq`` is set once the session flushes."""
    if op not in OPS:
        raise ValueError(f"change op must be one of {OPS}, got {op!r}")
    snap = None if product is None else {"id": product.id, "title": product.title, "category": product.category,
                                         "image": product.image, "image_hash": product.image_hash,
                                         "attributes": dict(product.attributes)}
    data = None if vector is None else np.ascontiguousarray(vector, np.float32).tobytes()
    entry = ChangeEntry(encoder=encoder, op=op, product_id=product_id, product=snap, vector=data, lists=lists)
    session.add(entry)
    return entry


def last_seq(store: Store, encoder: str) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.max(ChangeEntry.seq)).where(ChangeEntry.encoder == encoder)).scalar() or 0)


class FeedProbe:
    """The feed's newest ``seq`` for one encoder, on a raw DBAPI connection of its own: asked before every
    request, and SQLAlchemy's own per-call overhead (~0.4 ms measured) would be most of a similar-by-id."""

    def __init__(self, store: Store, encoder: str) -> None:
        self.url, self.encoder = store.engine.url, encoder
        self.postgres = store.engine.dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._conn: Any = None

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            from lookalike.index.pgvector import pg_conninfo

            return psycopg.connect(pg_conninfo(self.url.render_as_string(hide_password=False)), autocommit=True)
        return sqlite3.connect(self.url.database or "", check_same_thread=False, isolation_level=None)

    def last_seq(self) -> int:
        sql = f"SELECT max(seq) FROM changes WHERE encoder = {'%s' if self.postgres else '?'}"
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    return int(self._conn.execute(sql, (self.encoder,)).fetchone()[0] or 0)
                except Exception as e:  # a dropped connection (server restart): reconnect once, then report
                    self.close()
                    if attempt == 2:
                        raise StoreUnavailableError(f"cannot read the change feed: {e}") from e
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def since(store: Store, encoder: str, after: int) -> list[Change]:
    q = select(ChangeEntry).where(ChangeEntry.encoder == encoder, ChangeEntry.seq > after).order_by(ChangeEntry.seq)
    with store.session() as s:
        return [Change(e.seq, e.op, None if e.product is None else ProductRow(**e.product), e.product_id,
                       None if e.vector is None else np.frombuffer(e.vector, np.float32).copy(), list(e.lists or []))
                for e in s.scalars(q)]


def prune(store: Store, older_than_hours: float) -> int:
    """Drop entries older than the retention: a process that lagged further behind must restart to reload."""
    cut = datetime.now(UTC) - timedelta(hours=older_than_hours)
    with store.session() as s, s.begin():
        return int(s.execute(delete(ChangeEntry).where(ChangeEntry.created_at < cut)).rowcount or 0)


def _sqlite_lock_path(store: Store, name: str) -> Path:
    db = store.engine.url.database
    if not db or db == ":memory:":
        raise ValueError("an in-memory SQLite store cannot be shared between processes")
    return Path(db).with_name(f"{Path(db).name}.{name}-lock")


@contextmanager
def process_lock(store: Store, name: str = "write") -> Iterator[None]:
    """Held by one process at a time across every process on the store. ``"write"``: a writer, from planning a
    change to its commit; ``"index-sync"``: an index checkpoint (slow, so it must not hold up writers)."""
    if name not in LOCK_KEYS:
        raise ValueError(f"unknown lock {name!r}; valid: {sorted(LOCK_KEYS)}")
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as c:
            c.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEYS[name]})
            c.commit()
            try:
                yield
            finally:
                c.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEYS[name]})
                c.commit()
        return
    fd = os.open(_sqlite_lock_path(store, name), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
