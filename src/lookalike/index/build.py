"""Build an index, measure it against exact search, and save it with an ``infos.json`` that says what it is.

Layout of an index folder::

    <path>/index.<ext>        the backend's file (plus its sidecars, ``index.<ext>.meta.json`` ...)
    <path>/infos.json         backend, params, n, dim, bytes, recall@k vs exact, ms/query, batched QPS, timings

``load_index(path)`` reads ``infos.json`` to find the backend, then its ``load``.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import Index, create_index, index_class
from lookalike.index.auto import parse_memory, resolve_spec
from lookalike.index.backends import as_labels, as_unit_rows, topk_rows
from lookalike.io_utils import read_json, write_json

log = logging.getLogger(__name__)

INFOS = "infos.json"
SINGLE_QUERIES = 200  # single-query latency is the mean over this many one-row searches
GT_BLOCK_BYTES = 64 << 20  # score-matrix budget for the exact ground truth


def exact_topk(queries: np.ndarray, base: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k labels of each query, scanning ``base`` in row blocks so memory stays bounded."""
    k = min(k, len(base))
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    step = max(k, GT_BLOCK_BYTES // (4 * max(len(queries), 1)))
    for a in range(0, len(base), step):
        s = queries @ base[a : a + step].T
        s, j = topk_rows(s, min(k, s.shape[1]))
        both_s = np.concatenate([best_s, s], axis=1)
        both_i = np.concatenate([best_i, j + a], axis=1)
        best_s, pick = topk_rows(both_s, k)
        best_i = np.take_along_axis(both_i, pick, axis=1)
    return labels[best_i]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k labels that were found (padding -1 never counts)."""
    hits = [len(np.intersect1d(f[f >= 0], t[t >= 0])) / max(1, int((t >= 0).sum())) for f, t in zip(found, truth)]
    return float(np.mean(hits)) if hits else 0.0


def measure(index: Index, vectors: np.ndarray, labels: np.ndarray, sample: int = 1000, k: int = 10,
            seed: int = 0) -> dict[str, float]:
    """Recall@k against exact search, ms per single query and batched QPS, on ``sample`` rows as queries."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    queries = vectors[rows]
    truth = exact_topk(queries, vectors, labels, k)
    t0 = time.perf_counter()
    _, found = index.search(queries, k)
    batched = time.perf_counter() - t0
    singles = queries[:SINGLE_QUERIES]
    t0 = time.perf_counter()
    for q in singles:
        index.search(q[None, :], k)
    single = (time.perf_counter() - t0) / max(1, len(singles))
    return {f"recall_at_{k}": round(recall_at_k(found, truth), 4), "ms_per_query": round(1000 * single, 3),
            "qps_batched": round(len(queries) / max(batched, 1e-9), 1), "eval_queries": len(queries)}


def build_index(vectors: np.ndarray, labels: np.ndarray | None = None, name: str = "auto",
                path: Path | None = None, max_memory: str | int = "4G", params: dict[str, Any] | None = None,
                recall_sample: int = 1000, k: int = 10, seed: int = 0,
                attributes: Sequence[Mapping[str, Any] | None] | None = None) -> tuple[Index, dict[str, Any]]:
    """Build ``name`` ("auto" picks by size and budget) over ``vectors``, measure it, save it under ``path``.
    ``attributes`` (one mapping per vector) go into backends that filter on them (``attr_filter``)."""
    t_start = time.perf_counter()
    x = np.asarray(vectors)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"need a non-empty (n, dim) array of vectors, got shape {x.shape}")
    n, dim = x.shape
    x = as_unit_rows(x, dim)
    lab = as_labels(labels, n)
    spec = resolve_spec(name, n, dim, max_memory, **(params or {}))
    log.info("building %s %s over %d x %d (%s)", spec.backend, spec.params, n, dim, spec.reason)
    index = create_index(spec.backend, dim, **spec.params)
    if attributes is not None and "attr_filter" in index.capabilities:
        index.build(x, lab, attributes=attributes)  # type: ignore[call-arg]
    else:
        index.build(x, lab)
    built = time.perf_counter() - t_start
    log.info("built %s in %.1fs; measuring recall@%d on %d queries", spec.backend, built, k, min(recall_sample, n))
    t0 = time.perf_counter()
    quality = measure(index, x, lab, recall_sample, k, seed) if recall_sample > 0 else {}
    infos: dict[str, Any] = {
        "backend": spec.backend, "params": index.params, "n": len(index), "dim": dim, "bytes": index.nbytes(),
        "estimated_bytes": spec.estimated_bytes, "max_memory": parse_memory(max_memory) if name == "auto" else None,
        "capabilities": sorted(index.capabilities), "reason": spec.reason, "requested": name,
        f"recall_at_{k}": quality.get(f"recall_at_{k}"), "ms_per_query": quality.get("ms_per_query"),
        "qps_batched": quality.get("qps_batched"), "eval_queries": quality.get("eval_queries", 0),
        "timings": {"train": index.timings.get("train", 0.0), "add": index.timings.get("add", 0.0),
                    "build": round(built, 4), "evaluate": round(time.perf_counter() - t0, 4)},
        "file": f"index.{getattr(index, 'ext', 'bin')}",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if path is not None:
        path = Path(path)
        t0 = time.perf_counter()
        index.save(path / infos["file"])
        infos["timings"]["save"] = round(time.perf_counter() - t0, 4)
    infos["timings"]["total"] = round(time.perf_counter() - t_start, 4)
    if path is not None:
        write_json(path / INFOS, infos)  # last: a folder with infos.json holds a complete index
    log.info("index %s: n=%d recall@%d=%s ms/query=%s qps=%s", spec.backend, n, k, infos[f"recall_at_{k}"],
             infos["ms_per_query"], infos["qps_batched"])
    return index, infos


def load_index(path: Path) -> Index:
    """The index saved by ``build_index`` in folder ``path``."""
    path = Path(path)
    if not (path / INFOS).exists():
        raise FileNotFoundError(f"{path} has no {INFOS}: build the index first")
    infos = read_json(path / INFOS)
    return index_class(infos["backend"]).load(path / infos["file"])
