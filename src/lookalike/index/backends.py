"""The index contract's shared helpers and the numpy brute-force backend; faiss, hnswlib and Annoy live in
``faiss_backend.py``, ``hnswlib_backend.py`` and ``annoy_backend.py``.

All of them rank by inner product over L2-normalised float32 rows (so scores are cosines) and address rows by
int64 labels. Each saves to one main file (``save(path)``) plus, where the library's own file cannot carry
them, small sidecars beside it (``<path>.meta.json``, ``<path>.labels.npy``); every file is written atomically
and the meta json last, so a reader never pairs a new index with a missing sidecar.

``search(queries, k, allowed=None)``: backends with the "filter" capability take ``allowed``, either a boolean
mask indexed by label (``mask[label]``; labels past its end are excluded) or an array of allowed labels.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.base import Index, Timer
from lookalike.io_utils import atomic_write, read_json, write_json

log = logging.getLogger(__name__)

ADD_CHUNK = 65_536  # rows per add call: bounds temporary memory and paces the progress log


# ---- shared helpers -------------------------------------------------------------------------------
def as_unit_rows(x: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) C-contiguous float32 with unit rows; already-normalised input is returned without a copy."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # unlike linalg.norm, no (n, dim) temporary
    if len(x) and np.all(np.abs(norms - 1.0) < 1e-4):
        return x
    return x / np.maximum(norms, 1e-12)[:, None]  # zero rows stay zero instead of becoming NaN


def as_labels(labels: np.ndarray | None, n: int, start: int = 0) -> np.ndarray:
    """int64 labels, unique and >= 0 (-1 is the padding value); ``None`` -> start..start+n-1."""
    if labels is None:
        return np.arange(start, start + n, dtype=np.int64)
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"expected {n} labels, got shape {lab.shape}")
    if len(lab) and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {lab.dtype}")
    lab = lab.astype(np.int64, copy=False)
    if len(lab) and lab.min() < 0:
        raise ValueError("labels must be >= 0 (-1 marks padding in results)")
    if len(np.unique(lab)) != len(lab):
        raise ValueError("labels must be unique")
    return lab


def check_new_labels(new: np.ndarray, present: np.ndarray) -> None:
    clash = new[np.isin(new, present)]
    if len(clash):
        raise ValueError(f"labels already in the index (remove them first): {clash[:10].tolist()}")


def allowed_rows(labels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Boolean per entry of ``labels``: may it be returned under ``allowed`` (mask by label, or label list)?"""
    allowed = np.asarray(allowed)
    if allowed.dtype == bool:
        ok = labels < len(allowed)
        ok[ok] = allowed[labels[ok]]
        return ok
    return np.isin(labels, allowed.astype(np.int64, copy=False))


def meta_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".meta.json")


def read_meta(path: Path, backend: str) -> dict[str, Any]:
    meta = read_json(meta_path(path))
    if meta.get("backend") != backend:
        raise ValueError(f"{path} holds a {meta.get('backend')!r} index, not {backend!r}")
    return meta


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _default_threads() -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _empty(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((q, k), -np.inf, np.float32), np.full((q, k), -1, np.int64)


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row, sorted by descending score (k <= scores.shape[1])."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    s = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(part, order, axis=1)


# ---- exact ----------------------------------------------------------------------------------------
@INDEXES.register("exact", help="numpy brute force (float32 GEMM, exact); add, remove, filter")
class ExactIndex(Index):
    """Every query scored against every row; the reference the others are measured against."""

    name = "exact"
    ext = "npz"
    capabilities = frozenset({"add", "remove", "filter"})

    def __init__(self, dim: int, block_bytes: int = 64 << 20) -> None:
        super().__init__(dim, block_bytes=block_bytes)
        self.block_bytes = block_bytes
        self._x = np.zeros((0, dim), np.float32)  # capacity grows by doubling, so repeated adds stay cheap
        self._lab = np.zeros(0, np.int64)
        self._n = 0

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        with Timer(self.timings, "add"):
            x = as_unit_rows(vectors, self.dim)
            self._lab = as_labels(labels, len(x))
            self._x = x.copy() if x is vectors else x  # never alias the caller's array
            self._n = len(x)
        self.timings["train"] = 0.0

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        check_new_labels(lab, self._lab[: self._n])
        need = self._n + len(x)
        if need > len(self._x):
            cap = max(need, 2 * len(self._x), 1024)
            grown_x, grown_l = np.empty((cap, self.dim), np.float32), np.empty(cap, np.int64)
            grown_x[: self._n], grown_l[: self._n] = self._x[: self._n], self._lab[: self._n]
            self._x, self._lab = grown_x, grown_l
        self._x[self._n : need], self._lab[self._n : need] = x, lab
        self._n = need

    def remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self._lab[: self._n], np.asarray(labels, np.int64))
        m = int(keep.sum())
        self._x[:m], self._lab[:m] = self._x[: self._n][keep], self._lab[: self._n][keep]
        self._n = m

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        x, lab = self._x[: self._n], self._lab[: self._n]
        if allowed is not None:
            rows = np.flatnonzero(allowed_rows(lab, allowed))
            x, lab = x[rows], lab[rows]
        scores, labels = _empty(len(q), k)
        if len(x) == 0:
            return scores, labels
        kk = min(k, len(x))
        step = max(1, self.block_bytes // (4 * len(x)))  # bounds the (block, n) score matrix
        for a in range(0, len(q), step):
            s, j = topk_rows(q[a : a + step] @ x.T, kk)
            scores[a : a + step, :kk], labels[a : a + step, :kk] = s, lab[j]
        return scores, labels

    def __len__(self) -> int:
        return self._n

    def nbytes(self) -> int:
        return int(self._x.nbytes + self._lab.nbytes)

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
                np.savez(f, vectors=self._x[: self._n], labels=self._lab[: self._n])

        atomic_write(Path(path), write)
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params})

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        with np.load(path) as z:
            index._x, index._lab = z["vectors"], z["labels"]
        index._n = len(index._lab)
        return index



# ---- faiss ----------------------------------------------------------------------------------------
