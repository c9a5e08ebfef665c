"""Exact top-k neighbours by blocked GEMM: the similar-all stage and filtered exact queries.

``topk_all`` scores a block of rows against the whole matrix with one GEMM, blanks the pairs that must not be
recommended (the row itself, rows of the same image-hash group) to -inf in place, and selects with
``np.argpartition`` followed by a sort of only the k winners. The per-block extra work over a bare
``X @ X.T`` + argpartition loop is O(block * (1 + group size)), so it runs at the speed of that loop.
Results follow the Index contract: ``(scores float32 (n, k), idx int64 (n, k))`` padded with -inf / -1.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# Row-block selection is split over threads: argpartition releases the GIL and is single-threaded,
# while the GEMM before it already uses every BLAS thread.
_SELECT_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count() or 1))
# Bound on the (queries x database) score block of topk_query, in float32 elements (~256 MB).
_QUERY_BLOCK_ELEMS = 64 * 1024 * 1024


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dim) array, got shape {a.shape}")
    return a


def _as_labels(x: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if x is None:
        return None
    a = np.asarray(x)
    if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array of shape ({n},), got {a.dtype} {a.shape}")
    return a.astype(np.int64, copy=False)


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def _select_rows(S: np.ndarray, kk: int, out_s: np.ndarray, out_i: np.ndarray) -> None:
    """Write the kk best columns of every row of S, best first, into out_s / out_i ([:, :kk])."""
    m = S.shape[1]
    if kk >= m:
        part = np.broadcast_to(np.arange(m, dtype=np.int64), S.shape)
    else:
        part = np.argpartition(S, m - kk, axis=1)[:, m - kk:]
    top = np.take_along_axis(S, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    best = np.take_along_axis(part, order, axis=1)
    best[top == -np.inf] = -1  # an excluded pair made it in only because too few candidates exist
    out_s[:, :kk] = top
    out_i[:, :kk] = best


def _select(S: np.ndarray, kk: int, out_s: np.ndarray, out_i: np.ndarray, pool: ThreadPoolExecutor | None) -> None:
    rows = S.shape[0]
    if pool is None or rows < 64:
        _select_rows(S, kk, out_s, out_i)
        return
    step = -(-rows // _SELECT_THREADS)
    spans = [slice(a, min(rows, a + step)) for a in range(0, rows, step)]
    list(pool.map(lambda s: _select_rows(S[s], kk, out_s[s], out_i[s]), spans))


class _Groups:
    """Members of each row's group, found by one stable sort, so exclusion costs O(rows * group size)."""

    def __init__(self, groups: np.ndarray) -> None:
        self.order = np.argsort(groups, kind="stable")
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        # unique values come out sorted, so group g occupies order[start_g : start_g + count_g]
        self.start = (np.cumsum(counts) - counts)[inverse]
        self.count = counts[inverse]
        # -1 means "no group"; a group of one is the row itself, already excluded.
        self.count[(groups < 0) | (self.count < 2)] = 0

    def blank(self, S: np.ndarray, b0: int, col_offset: int = 0) -> None:
        """Set S[r, j] = -inf for every block row r (global row b0 + r) and every member j of its group."""
        c = self.count[b0:b0 + S.shape[0]]
        sel = np.flatnonzero(c)
        if sel.size == 0:
            return
        cs = c[sel]
        rr = np.repeat(sel, cs)
        offs = np.arange(int(cs.sum())) - np.repeat(np.cumsum(cs) - cs, cs)
        cols = self.order[np.repeat(self.start[b0 + sel], cs) + offs]
        S[rr, cols - col_offset] = -np.inf


def _topk_self(X: np.ndarray, k: int, block_size: int, groups: np.ndarray | None,
               bar: tqdm, pool: ThreadPoolExecutor | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every row of X against the other rows of X (local row numbers)."""
    n = len(X)
    out_s, out_i = _empty(n, k)
    kk = min(k, n - 1)
    if kk <= 0:
        bar.update(n)
        return out_s, out_i
    grp = _Groups(groups) if groups is not None and (groups >= 0).any() else None
    bs = max(1, min(block_size, n))
    buf = np.empty((bs, n), dtype=np.float32)
    XT = X.T  # a transposed view: BLAS reads it with a trans flag, no copy
    for b0 in range(0, n, bs):
        b1 = min(n, b0 + bs)
        S = buf[: b1 - b0]
        np.matmul(X[b0:b1], XT, out=S)
        r = np.arange(b1 - b0)
        S[r, b0 + r] = -np.inf
        if grp is not None:
            grp.blank(S, b0)
        _select(S, kk, out_s[b0:b1], out_i[b0:b1], pool)
        bar.update(b1 - b0)
    return out_s, out_i


def topk_all(
    vectors: np.ndarray,
    k: int,
    block_size: int = 2048,
    groups: np.ndarray | None = None,
    partitions: np.ndarray | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k other rows of every row of an (n, d) L2-normalised matrix, by inner product.

    groups: int per row (e.g. an id of the image content hash); rows sharing a value >= 0 never recommend
    each other. -1 means no group.
    partitions: int per row (e.g. category codes); only rows of the same partition are candidates. Every
    value, -1 included, is a partition of its own; each is searched as its own sub-matrix.
    Returns (scores float32 (n, k), idx int64 (n, k)), best first, padded with -inf / -1.
    """
    X = _as_matrix(vectors, "vectors")
    n = len(X)
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    groups = _as_labels(groups, n, "groups")
    partitions = _as_labels(partitions, n, "partitions")
    if k == 0 or n == 0:
        return _empty(n, k)
    pool = ThreadPoolExecutor(_SELECT_THREADS) if _SELECT_THREADS > 1 else None
    try:
        with tqdm(total=n, desc="top-k", unit="row", disable=not show_progress) as bar:
            if partitions is None:
                return _topk_self(X, k, block_size, groups, bar, pool)
            scores, idx = _empty(n, k)
            order = np.argsort(partitions, kind="stable")
            _, counts = np.unique(partitions[order], return_counts=True)
            ends = np.cumsum(counts)
            for a, b in zip(ends - counts, ends):
                rows = order[a:b]
                s, i = _topk_self(X[rows], k, block_size, None if groups is None else groups[rows], bar, pool)
                scores[rows] = s
                idx[rows] = np.where(i >= 0, rows[np.maximum(i, 0)], -1)
            log.debug("top-k over %d partitions of %d rows", len(counts), n)
            return scores, idx
    finally:
        if pool is not None:
            pool.shutdown()


def topk_query(
    database: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k database rows for each query by inner product, optionally only rows where ``mask``.

    queries may be one vector (d,) or a matrix (q, d). idx are database row positions.
    Returns (scores float32 (q, k), idx int64 (q, k)), best first, padded with -inf / -1.
    """
    D = _as_matrix(database, "database")
    Q = _as_matrix(np.atleast_2d(queries), "queries")
    n, q = len(D), len(Q)
    if Q.shape[1] != D.shape[1]:
        raise ValueError(f"queries have dim {Q.shape[1]} but the database has dim {D.shape[1]}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    out_s, out_i = _empty(q, k)
    cols: np.ndarray | None = None
    blanked: np.ndarray | None = None
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"mask must be a boolean array of shape ({n},), got {mask.shape}")
        m = int(mask.sum())
        # Gathering the allowed rows reads and writes them once more; it pays off only when few are allowed.
        if 3 * m < n:
            cols = np.flatnonzero(mask)
            D = D[cols]
        else:
            blanked = np.flatnonzero(~mask)
        n = m
    kk = min(k, n)
    if kk == 0 or q == 0:
        return out_s, out_i
    step = max(1, _QUERY_BLOCK_ELEMS // max(1, len(D)))
    for a in range(0, q, step):
        S = Q[a:a + step] @ D.T
        if blanked is not None and blanked.size:
            S[:, blanked] = -np.inf
        _select_rows(S, kk, out_s[a:a + step], out_i[a:a + step])
    if cols is not None:
        out_i = np.where(out_i >= 0, cols[np.maximum(out_i, 0)], -1)
    return out_s, out_i
