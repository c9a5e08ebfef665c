"""The hnswlib backend: an HNSW graph with add, remove (mark_deleted) and filtered search (see
``lookalike.index.backends`` for the shared contract)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.backends import (
    ADD_CHUNK,
    _check_k,
    _default_threads,
    _empty,
    allowed_rows,
    as_labels,
    as_unit_rows,
    check_new_labels,
    meta_path,
    read_meta,
    topk_rows,
)
from lookalike.index.base import Index, Timer, pad_results
from lookalike.io_utils import atomic_write, write_json

log = logging.getLogger(__name__)

@INDEXES.register("hnswlib", help="hnswlib HNSW graph (M, ef_construction, ef); add, remove (mark_deleted), filter")
class HnswlibIndex(Index):
    """hnswlib over inner product; removal marks rows deleted (they keep routing, never returned)."""

    name = "hnswlib"
    ext = "hnsw"
    capabilities = frozenset({"add", "remove", "filter"})
    EXACT_FILTER_MAX = 4096  # allowed sets this small are scored exactly: faster, and never short of k

    def __init__(self, dim: int, M: int = 32, ef_construction: int = 200, ef: int = 128,
                 threads: int | None = None, seed: int = 100) -> None:
        super().__init__(dim, M=M, ef_construction=ef_construction, ef=ef, seed=seed,
                         **({"threads": threads} if threads else {}))
        self.M, self.ef_construction, self.ef, self.seed = M, ef_construction, ef, seed
        self.threads = threads or _default_threads()
        self._index: Any = None
        self._labels = np.zeros(0, np.int64)  # sorted live labels
        self._deleted = np.zeros(0, np.int64)  # sorted labels marked deleted (still in the graph)

    def _new(self, capacity: int) -> Any:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=max(capacity, 1), M=self.M, ef_construction=self.ef_construction,
                         random_seed=self.seed)
        index.set_ef(self.ef)
        index.set_num_threads(self.threads)
        return index

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        self.timings["train"] = 0.0
        with Timer(self.timings, "add"):
            self._index = self._new(len(x))
            self._labels, self._deleted = np.zeros(0, np.int64), np.zeros(0, np.int64)
            self._add(x, lab)

    def _add(self, x: np.ndarray, lab: np.ndarray) -> None:
        # re-adding a deleted label overwrites its old row in place, so it needs no new capacity
        need = self._index.element_count + int((~np.isin(lab, self._deleted)).sum())
        if need > self._index.max_elements:
            self._index.resize_index(max(need, 2 * self._index.max_elements))
        for a in range(0, len(x), ADD_CHUNK):
            self._index.add_items(x[a : a + ADD_CHUNK], lab[a : a + ADD_CHUNK], num_threads=self.threads)
            if len(x) > ADD_CHUNK:
                log.info("hnswlib: added %d / %d", min(a + ADD_CHUNK, len(x)), len(x))
        self._labels = np.union1d(self._labels, lab)
        self._deleted = np.setdiff1d(self._deleted, lab)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        check_new_labels(lab, self._labels)
        if self._index is None:
            self._index = self._new(len(x))
        self._add(x, lab)

    def remove(self, labels: np.ndarray) -> None:
        gone = np.intersect1d(np.asarray(labels, np.int64), self._labels)
        for label in gone.tolist():
            self._index.mark_deleted(label)
        self._labels = np.setdiff1d(self._labels, gone)
        self._deleted = np.union1d(self._deleted, gone)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        live = self._labels
        if allowed is not None:
            live = live[allowed_rows(live, allowed)]
        if len(q) == 0 or len(live) == 0:
            return _empty(len(q), k)
        kk = min(k, len(live))
        if allowed is not None and len(live) <= self.EXACT_FILTER_MAX:
            s, j = topk_rows(q @ self._index.get_items(live, return_type="numpy").T, kk)
            return pad_results(list(s), list(live[j]), k)
        filt = set(live.tolist()).__contains__ if allowed is not None else None
        threads = 1 if filt else self.threads  # the filter is a Python callback: threads would fight for the GIL
        try:
            lab, dist = self._index.knn_query(q, k=kk, num_threads=threads, filter=filt)
            return pad_results(list(1.0 - dist), list(lab.astype(np.int64)), k)
        except RuntimeError:  # some query found fewer than kk: retry one by one with smaller k
            scores, labels = [], []
            for row in q:
                s, lab = np.zeros(0, np.float32), np.zeros(0, np.int64)
                kq = kk
                while kq >= 1:
                    try:
                        lab, dist = self._index.knn_query(row[None], k=kq, num_threads=1, filter=filt)
                        s, lab = 1.0 - dist[0], lab[0].astype(np.int64)
                        break
                    except RuntimeError:
                        kq //= 2
                scores.append(s)
                labels.append(lab)
            return pad_results(scores, labels, k)

    def __len__(self) -> int:
        return len(self._labels)

    def nbytes(self) -> int:
        if self._index is None:
            return 0
        per_row = 4 * self.dim + 8 * self.M + 12  # vector + level-0 links + label, as hnswlib lays them out
        spare = self._index.max_elements - self._index.element_count
        return int(self._index.index_file_size() + spare * per_row + 8 * (len(self._labels) + len(self._deleted)))

    def save(self, path: Path) -> None:
        if self._index is None:
            raise RuntimeError("nothing to save: build() first")
        atomic_write(Path(path), lambda tmp: self._index.save_index(str(tmp)))
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params,
                                     "deleted": self._deleted.tolist()})

    @classmethod
    def load(cls, path: Path) -> HnswlibIndex:
        import hnswlib

        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        index._index = hnswlib.Index(space="ip", dim=index.dim)
        index._index.load_index(str(path))
        index._index.set_ef(index.ef)
        index._index.set_num_threads(index.threads)
        index._deleted = np.asarray(meta.get("deleted", []), np.int64)
        index._labels = np.setdiff1d(np.asarray(index._index.get_ids_list(), np.int64), index._deleted)
        return index


# ---- annoy ----------------------------------------------------------------------------------------
