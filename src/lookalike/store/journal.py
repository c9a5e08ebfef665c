"""The write-ahead journal of vector changes (table ``journal``), and its replay into the vector files.

A live change commits the product row, its similar lists and a journal entry (with the new vector) in one
database transaction before the API answers, so an acknowledged change survives ``kill -9``. The vector
chunk files and the index are derived from the journal later, by ``flush_vectors`` (also run when a
Recommender opens a workspace) and by the index sync (``lookalike.live.index_sync``), which records the last
entry it applied in ``index/<encoder>/live.json``. Entries are pruned once both have consumed them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from lookalike.store.sql import Store
from lookalike.store.tables import JournalEntry
from lookalike.store.vectors import VectorStore, safe_dirname

log = logging.getLogger(__name__)


@dataclass
class Entry:
    seq: int
    op: str
    product_id: str
    image_hash: str | None
    vector: np.ndarray | None


def record(session: Session, encoder: str, op: str, product_id: str, image_hash: str | None = None,
           vector: np.ndarray | None = None) -> None:
    """Add an entry inside the caller's transaction (so it commits or rolls back with the change)."""
    if op not in ("add", "remove"):
        raise ValueError(f"journal op must be 'add' or 'remove', got {op!r}")
    data = None if vector is None else np.ascontiguousarray(vector, np.float32).tobytes()
    session.add(JournalEntry(encoder=encoder, op=op, product_id=product_id, image_hash=image_hash, vector=data,
                             flushed=vector is None))


def entries(store: Store, encoder: str, after: int = 0) -> list[Entry]:
    q = (select(JournalEntry).where(JournalEntry.encoder == encoder, JournalEntry.seq > after)
         .order_by(JournalEntry.seq))
    with store.session() as s:
        return [Entry(e.seq, e.op, e.product_id, e.image_hash,
                      None if e.vector is None else np.frombuffer(e.vector, np.float32))
                for e in s.scalars(q)]


def flush_vectors(workspace: Path, store: Store, encoder: str) -> int:
    """Copy journalled vectors not yet in the vector files into one new chunk; returns how many.

    The chunk is written (atomically) before the entries are marked flushed: a crash in between only
    writes the same vectors again next time, and a later chunk wins per id, so that is harmless.
    """
    q = (select(JournalEntry.seq, JournalEntry.product_id, JournalEntry.image_hash, JournalEntry.vector)
         .where(JournalEntry.encoder == encoder, JournalEntry.op == "add", JournalEntry.flushed.is_(False))
         .order_by(JournalEntry.seq))
    with store.engine.connect() as c:
        rows = list(c.execute(q))
    if not rows:
        return 0
    latest: dict[str, tuple[str | None, bytes]] = {}
    for _, pid, h, vec in rows:
        latest[pid] = (h, vec)  # the newest vector per product wins
    ids = list(latest)
    vecs = np.stack([np.frombuffer(latest[i][1], np.float32) for i in ids])
    VectorStore(Path(workspace) / "vectors" / safe_dirname(encoder)).append(ids, [latest[i][0] for i in ids], vecs)
    seqs = [r[0] for r in rows]
    with store.session() as s, s.begin():
        for a in range(0, len(seqs), 900):
            s.execute(update(JournalEntry).where(JournalEntry.seq.in_(seqs[a : a + 900])).values(flushed=True))
    log.info("journal: flushed %d vectors of %s into the vector files", len(ids), encoder)
    return len(ids)


def prune(store: Store, encoder: str, upto: int) -> int:
    """Drop entries the vector files and the index both hold (flushed, and seq <= ``upto``)."""
    with store.session() as s, s.begin():
        res = s.execute(delete(JournalEntry).where(JournalEntry.encoder == encoder, JournalEntry.seq <= upto,
                                                   JournalEntry.flushed.is_(True)))
        return int(res.rowcount or 0)


def last_seq(store: Store, encoder: str) -> int:
    q = select(JournalEntry.seq).where(JournalEntry.encoder == encoder).order_by(JournalEntry.seq.desc()).limit(1)
    with store.session() as s:
        return int(s.scalar(q) or 0)
