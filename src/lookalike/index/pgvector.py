"""pgvector: the vectors live in the PostgreSQL store, under an HNSW index with cosine ops.

One table per index (``label bigint`` primary key, ``embedding vector(dim)``, ``attrs jsonb``). Filters run in
SQL next to the graph walk: attribute filters on ``attrs``, allow and deny lists on ``label``. pgvector's
iterative index scans (``hnsw.iterative_scan = relaxed_order``) keep walking the graph until k rows pass the
filter, so filtered queries still return k. A batch of queries is one statement (a LATERAL join over the query
array), so batched search costs one round trip. The saved "index file" holds only where the table is.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.backends import _check_k, _empty, as_labels, as_unit_rows, check_new_labels
from lookalike.index.base import Index, Timer
from lookalike.index.scalar import ScalarFilter, allowed_labels, as_attribute_rows, read_pointer, save_pointer

log = logging.getLogger(__name__)

PLAIN_MAX_DIM = 2000  # 4 * dim + 8 bytes must fit in an 8 kB page; pgvector's HNSW indexes 2000 dims at most
QUERY_CHUNK = 64  # queries per statement: bounds the statement size and the rows held in one result
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


def pg_conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.split("+")[0] in ("postgresql", "postgres"):
        raise ValueError(f"pgvector needs a postgresql:// URL, got {url!r}")
    return f"postgresql://{rest}"


def where_sql(allowed: np.ndarray | None, where: ScalarFilter | None) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its parameters for the contract's ``allowed`` and a ``ScalarFilter``."""
    from psycopg.types.json import Jsonb

    parts: list[str] = []
    params: list[Any] = []
    lab = allowed_labels(allowed)
    if lab is not None:
        parts.append("label = ANY(%s::bigint[])")
        params.append(lab.tolist())
    if where is not None:
        for key, vals in where.equals.items():
            # containment (@>) is what the GIN jsonb_path_ops index answers
            parts.append("(" + " OR ".join(["attrs @> %s"] * len(vals) or ["false"]) + ")")
            params += [Jsonb({key: str(v)}) for v in vals]
        for key, vals in where.exclude.items():
            if vals:
                parts.append("NOT (" + " OR ".join(["attrs @> %s"] * len(vals)) + ")")
                params += [Jsonb({key: str(v)}) for v in vals]
        if len(where.deny):
            parts.append("NOT (label = ANY(%s::bigint[]))")
            params.append(np.asarray(where.deny, np.int64).tolist())
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


@INDEXES.register("pgvector", help="PostgreSQL + pgvector HNSW (cosine) in the store database (url=, or "
                                   "LOOKALIKE_STORE_URL); add, remove, filter and attribute filters in SQL")
class PgvectorIndex(Index):
    name = "pgvector"
    ext = "pgvector"
    capabilities = frozenset({"add", "remove", "filter", "attr_filter"})

    def __init__(self, dim: int, url: str | None = None, table: str = "lookalike_vectors", m: int = 16,
                 ef_construction: int = 64, ef_search: int = 100, max_scan_tuples: int = 20_000,
                 threads: int = 2) -> None:
        url = url or os.environ.get("LOOKALIKE_STORE_URL")
        if not url:
            raise ValueError("pgvector keeps its vectors in PostgreSQL: give url=postgresql://... "
                             "or set LOOKALIKE_STORE_URL")
        pg_conninfo(url)  # a wrong URL fails here, not at the first search
        if not _NAME.match(table):
            raise ValueError(f"table name {table!r}: lower-case letters, digits and _ only")
        # a URL with a password is not written into the index file: load() then reads LOOKALIKE_STORE_URL
        secret = re.search(r"://[^/@]*:[^/@]+@", url) is not None
        super().__init__(dim, **({} if secret else {"url": url}), table=table, m=m,
                         ef_construction=ef_construction, ef_search=ef_search, max_scan_tuples=max_scan_tuples)
        self.url, self.table, self.threads = url, table, threads
        self._conn: Any = None

    # -- connection --
    def conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg
            from pgvector.psycopg import register_vector

            conn = psycopg.connect(pg_conninfo(self.url), autocommit=True)
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            p = self.params
            conn.execute(f"SET hnsw.ef_search = {int(p['ef_search'])}")
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            conn.execute(f"SET hnsw.max_scan_tuples = {int(p['max_scan_tuples'])}")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writes --
    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None,
              attributes: Iterable[Mapping[str, Any] | None] | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        attrs = as_attribute_rows(attributes, len(x))
        t, p, c = self.table, self.params, self.conn()
        self.timings["train"] = 0.0
        with Timer(self.timings, "add"), c.transaction():
            c.execute(f"DROP TABLE IF EXISTS {t}")
            c.execute(f"CREATE TABLE {t} (label bigint PRIMARY KEY, embedding vector({self.dim}) NOT NULL, "
                      "attrs jsonb NOT NULL DEFAULT '{}')")
            if self.dim <= PLAIN_MAX_DIM:
                # vectors over ~2 kB are TOASTed by default: the heap then looks tiny to the planner, which
                # costs a full scan (that detoasts every row) far below the HNSW walk and picks it even
                # unfiltered; measured at 50k x 1544: 3.1 s per query instead of 0.1 s. Inline rows fix the costs.
                c.execute(f"ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN")
            self._copy(x, lab, attrs)
            # the graph is built once over all rows: much faster than growing it row by row
            c.execute("SET LOCAL maintenance_work_mem = '2GB'")
            c.execute(f"SET LOCAL max_parallel_maintenance_workers = {max(0, self.threads - 1)}")
            c.execute(f"CREATE INDEX {t}_hnsw ON {t} USING hnsw (embedding vector_cosine_ops) "
                      f"WITH (m = {int(p['m'])}, ef_construction = {int(p['ef_construction'])})")
            c.execute(f"CREATE INDEX {t}_attrs ON {t} USING gin (attrs jsonb_path_ops)")
        c.execute(f"ANALYZE {t}")
        log.info("pgvector: %d rows in table %s, HNSW built in %.1fs", len(x), t, self.timings["add"])

    def _copy(self, x: np.ndarray, lab: np.ndarray, attrs: Sequence[dict[str, str]]) -> None:
        with self.conn().cursor() as cur, cur.copy(
                f"COPY {self.table} (label, embedding, attrs) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "vector", "jsonb"])
            for label, row, a in zip(lab.tolist(), x, attrs):
                cp.write_row((label, row, a))

    def add(self, vectors: np.ndarray, labels: np.ndarray,
            attributes: Iterable[Mapping[str, Any] | None] | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        present = self.conn().execute(f"SELECT label FROM {self.table} WHERE label = ANY(%s::bigint[])",
                                      (lab.tolist(),)).fetchall()
        check_new_labels(lab, np.asarray([r[0] for r in present], np.int64))
        with self.conn().transaction():
            self._copy(x, lab, as_attribute_rows(attributes, len(x)))

    def remove(self, labels: np.ndarray) -> None:
        self.conn().execute(f"DELETE FROM {self.table} WHERE label = ANY(%s::bigint[])",
                            (np.asarray(labels, np.int64).tolist(),))

    def set_attributes(self, labels: Sequence[int], attributes: Iterable[Mapping[str, Any] | None]) -> None:
        """Replace the attribute copy of rows already indexed (after a product's attributes change)."""
        from psycopg.types.json import Jsonb

        rows = as_attribute_rows(attributes, len(labels))
        with self.conn().cursor() as cur:
            cur.executemany(f"UPDATE {self.table} SET attrs = %s WHERE label = %s",
                            [(Jsonb(a), int(label)) for label, a in zip(labels, rows)])

    # -- search --
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               where: ScalarFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        scores, labels = _empty(len(q), k)
        cond, params = where_sql(allowed, where)
        sql = (f"SELECT q.ord, r.label, r.dist FROM unnest(%s::vector[]) WITH ORDINALITY AS q(v, ord) "
               f"CROSS JOIN LATERAL (SELECT label, embedding <=> q.v AS dist FROM {self.table}{cond} "
               f"ORDER BY embedding <=> q.v LIMIT {int(k)}) r")
        for a in range(0, len(q), QUERY_CHUNK):
            rows = self.conn().execute(sql, [list(q[a : a + QUERY_CHUNK]), *params]).fetchall()
            if not rows:
                continue
            got = np.asarray(rows, dtype=np.float64)
            # relaxed_order may return a few rows out of order: sort each query's rows by distance
            got = got[np.lexsort((got[:, 2], got[:, 0]))]
            qi = got[:, 0].astype(np.int64) - 1 + a
            rank = np.arange(len(got)) - np.searchsorted(got[:, 0], got[:, 0])
            scores[qi, rank] = 1.0 - got[:, 2]
            labels[qi, rank] = got[:, 1].astype(np.int64)
        return scores, labels

    # -- bookkeeping --
    def __len__(self) -> int:
        return int(self.conn().execute(f"SELECT count(*) FROM {self.table}").fetchone()[0])

    def nbytes(self) -> int:
        row = self.conn().execute("SELECT pg_total_relation_size(to_regclass(%s))", (self.table,)).fetchone()
        return int(row[0] or 0)

    def save(self, path: Path) -> None:
        save_pointer(path, self.name, self.dim, self.params)

    @classmethod
    def load(cls, path: Path) -> PgvectorIndex:
        dim, params = read_pointer(path, cls.name)
        index = cls(dim, **params)
        found = index.conn().execute("SELECT to_regclass(%s)", (index.table,)).fetchone()[0]
        if found is None:
            raise FileNotFoundError(f"table {index.table} is not in {pg_conninfo(index.url)}: rebuild the index")
        return index
