"""The Annoy backend: a random-projection forest in a memory-mapped file; build only (see
``lookalike.index.backends`` for the shared contract)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.backends import (
    _check_k,
    _empty,
    as_labels,
    as_unit_rows,
    meta_path,
    read_meta,
)
from lookalike.index.base import Index, Timer, pad_results
from lookalike.io_utils import atomic_write, write_json

log = logging.getLogger(__name__)

@INDEXES.register("annoy", help="Annoy random-projection forest (mmap'd file; n_trees, search_k); build only")
class AnnoyIndex(Index):
    """Annoy, angular metric; items are row positions and the labels array is saved beside the file."""

    name = "annoy"
    ext = "annoy"
    capabilities = frozenset()

    def __init__(self, dim: int, n_trees: int = 64, search_k: int = -1, seed: int = 0, threads: int = -1) -> None:
        super().__init__(dim, n_trees=n_trees, search_k=search_k, seed=seed, threads=threads)
        self.n_trees, self.search_k, self.seed, self.threads = n_trees, search_k, seed, threads
        self._index: Any = None
        self._labels = np.zeros(0, np.int64)
        self._file: Path | None = None

    def _new(self) -> Any:
        from annoy import AnnoyIndex as Annoy

        index = Annoy(self.dim, "angular")
        index.set_seed(self.seed)
        return index

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        index = self._new()
        with Timer(self.timings, "add"):
            for i, row in enumerate(x):
                index.add_item(i, row)
                if (i + 1) % 100_000 == 0:
                    log.info("annoy: added %d / %d", i + 1, len(x))
        with Timer(self.timings, "train"):
            log.info("annoy: building %d trees over %d vectors", self.n_trees, len(x))
            index.build(self.n_trees, n_jobs=self.threads)
        self._index, self._labels, self._file = index, lab, None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        if self._index is None or len(self._labels) == 0:
            return _empty(len(q), k)
        scores, labels = [], []
        for row in q:
            rows, dist = self._index.get_nns_by_vector(row, k, search_k=self.search_k, include_distances=True)
            d = np.asarray(dist, np.float32)
            scores.append(1.0 - d * d / 2.0)  # angular distance is sqrt(2 - 2 cos) on unit vectors
            labels.append(self._labels[np.asarray(rows, np.int64)])
        return pad_results(scores, labels, k)

    def __len__(self) -> int:
        return len(self._labels)

    def nbytes(self) -> int:
        if self._file is not None and self._file.exists():
            return self._file.stat().st_size + self._labels.nbytes
        # annoy keeps one node per item plus ~2n/K split nodes per tree, K ~ dim + 2 items per leaf
        node = 4 * (self.dim + 3)
        nodes = len(self._labels) * (1 + 2 * self.n_trees / (self.dim + 2))
        return int(nodes * node + self._labels.nbytes)

    def save(self, path: Path) -> None:
        if self._index is None:
            raise RuntimeError("nothing to save: build() first")
        path = Path(path)

        def write_labels(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, self._labels)

        atomic_write(path.with_name(path.name + ".labels.npy"), write_labels)
        # annoy re-mmaps the file it just wrote; the mapping survives the rename onto ``path``
        atomic_write(path, lambda tmp: self._index.save(str(tmp)))
        self._file = path
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params})

    @classmethod
    def load(cls, path: Path) -> AnnoyIndex:
        path = Path(path)
        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        index._index = index._new()
        index._index.load(str(path))  # mmap: pages come in on demand and are shared between processes
        index._labels = np.load(path.with_name(path.name + ".labels.npy"))
        index._file = path
        return index
