"""Ranking metrics of same-label retrieval, as pure functions of a hit matrix.

Every function takes ``hits``: a (queries, K) boolean matrix, row i = the ranked results of query i, True
where the result is relevant (best first; padding of short result lists is simply False), and
``n_relevant``: how many relevant items each query has in the whole catalogue (the query excluded).
They return one value per query, so callers can average overall or per category alike.

Definitions (binary relevance, R = n_relevant, rel_i = hits[:, i-1]):
    P@k    = sum_{i<=k} rel_i / k
    R@k    = sum_{i<=k} rel_i / R
    AP@k   = sum_{i<=k} P@i * rel_i / min(k, R)          (mAP@k is its mean over queries)
    nDCG@k = sum_{i<=k} rel_i / log2(i+1)  /  sum_{i<=min(k,R)} 1 / log2(i+1)
    HR@k   = 1 if any rel_i for i <= k else 0
Queries with R = 0 are undefined for R, AP and nDCG; callers leave them out (``select_queries`` does).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METRICS = ("P", "R", "mAP", "nDCG", "HR")


def _prep(hits: np.ndarray, k: int) -> np.ndarray:
    h = np.asarray(hits, dtype=bool)
    if h.ndim != 2:
        raise ValueError(f"hits must be a (queries, K) matrix, got shape {h.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = h[:, :k]
    if top.shape[1] < k:  # fewer results than k: the missing ranks are misses
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])))
    return top


def _n_rel(n_relevant: np.ndarray | Sequence[int], n: int) -> np.ndarray:
    r = np.asarray(n_relevant, dtype=np.float64)
    if r.shape != (n,):
        raise ValueError(f"n_relevant must have one count per query ({n}), got shape {r.shape}")
    return r


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return _prep(hits, k).sum(1) / k


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    top = _prep(hits, k)
    r = _n_rel(n_relevant, len(top))
    return np.divide(top.sum(1), r, out=np.zeros(len(top)), where=r > 0)


def average_precision_at_k(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    top = _prep(hits, k).astype(np.float64)
    r = _n_rel(n_relevant, len(top))
    prec_at_i = np.cumsum(top, 1) / np.arange(1, k + 1)
    denom = np.minimum(r, k)
    return np.divide((prec_at_i * top).sum(1), denom, out=np.zeros(len(top)), where=denom > 0)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    top = _prep(hits, k).astype(np.float64)
    r = _n_rel(n_relevant, len(top))
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = top @ discount
    ideal_cum = np.concatenate([[0.0], np.cumsum(discount)])
    idcg = ideal_cum[np.minimum(r, k).astype(np.int64)]
    return np.divide(dcg, idcg, out=np.zeros(len(top)), where=idcg > 0)


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    return _prep(hits, k).any(1).astype(np.float64)


def per_query(hits: np.ndarray, n_relevant: np.ndarray | Sequence[int], ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Every metric at every k, one value per query: keys like ``"P@10"``, ``"mAP@10"``."""
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"P@{k}"] = precision_at_k(hits, k)
        out[f"R@{k}"] = recall_at_k(hits, n_relevant, k)
        out[f"mAP@{k}"] = average_precision_at_k(hits, n_relevant, k)
        out[f"nDCG@{k}"] = ndcg_at_k(hits, n_relevant, k)
        out[f"HR@{k}"] = hit_rate_at_k(hits, k)
    return out


def summarise(values: dict[str, np.ndarray], rows: np.ndarray | None = None, digits: int = 4) -> dict[str, float]:
    """Mean of each per-query metric, over all queries or over ``rows`` only."""
    return {name: round(float(np.mean(v if rows is None else v[rows])), digits) if len(v) else float("nan")
            for name, v in values.items()}


def by_group(values: dict[str, np.ndarray], groups: Sequence[str], digits: int = 4) -> dict[str, dict[str, float]]:
    """Per-group means (e.g. per category), with the number of queries of each group under ``"queries"``."""
    g = np.asarray(groups, dtype=object)
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(g.tolist())):
        rows = np.flatnonzero(g == name)
        out[name] = {"queries": len(rows), **summarise(values, rows, digits)}
    return out


def latency_summary(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds (numpy's linear-interpolation percentiles) and the sample size."""
    ms = 1000.0 * np.asarray(seconds, dtype=np.float64)
    if ms.size == 0:
        return {"n": 0}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"n": int(ms.size), "p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
            "p99_ms": round(float(p99), 3), "mean_ms": round(float(ms.mean()), 3)}


def recall_vs_exact(found_scores: np.ndarray, exact_scores: np.ndarray, k: int, tol: float = 1e-5) -> float:
    """Recall@k of an approximate search against exact search, tolerant to ties.

    ``found_scores``: exact inner products of the items the index returned (q, >=k; -inf pads);
    ``exact_scores``: the exact top scores (q, >=k), best first. A returned item counts as a true
    neighbour when it scores at least the k-th exact score (minus ``tol``), so swapping items of equal
    score (duplicate images, float rounding of the backend) is not counted as a miss.
    """
    found = np.asarray(found_scores, dtype=np.float64)[:, :k]
    exact = np.asarray(exact_scores, dtype=np.float64)[:, :k]
    if len(found) == 0:
        return float("nan")
    kth = np.where(np.isfinite(exact), exact, np.inf).min(1)
    n_true = np.isfinite(exact).sum(1)
    good = (found >= (kth - tol)[:, None]).sum(1)
    return float(np.mean(np.minimum(good, n_true) / np.maximum(n_true, 1)))
