"""Same-label retrieval over built workspaces: load, pick queries, search, score.

The ranking evaluated is exact inner-product search over the workspace's vectors (what the similar lists
are made of up to ``EXACT_SIMILAR_LIMIT`` products); the workspace's ANN index is scored separately, by its
recall against that exact search and by its single-query latency.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.catalogue import resolve_image_path
from lookalike.evaluate import metrics
from lookalike.index.build import INFOS, load_index, recall_at_k
from lookalike.pipeline import codes, load_vectors
from lookalike.recommend.topk import topk_query
from lookalike.store.sql import ProductRow, Store
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class LoadedWorkspace:
    """One built workspace in memory: its products, its vectors and where its images and index live."""

    root: Path
    name: str
    encoder: str
    ids: list[str]
    vectors: np.ndarray
    products: dict[str, ProductRow]
    catalogue_root: Path
    category_column: str | None
    pos: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.pos = {pid: i for i, pid in enumerate(self.ids)}

    @classmethod
    def open(cls, workspace: Path, name: str | None = None, store_url: str | None = None) -> LoadedWorkspace:
        ws = Workspace(workspace)
        info = ws.read(ws.build_json)
        if not info.get("encoder"):
            raise FileNotFoundError(f"{ws.root} has no build.json: run `lookalike build CATALOGUE --workspace {ws.root}`")
        store = Store.for_workspace(ws.root, store_url)
        ids, vecs = load_vectors(ws.root, info["encoder"], store)
        cat = ws.read(ws.catalogue_json)
        return cls(ws.root, name or ws.root.name, info["encoder"], ids, vecs, store.get_products(ids),
                   Path(cat.get("root", ws.root)), (cat.get("mapping") or {}).get("category"))

    def labels(self, label: str) -> list[str | None]:
        """The ``label`` of every product (in ``ids`` order); the catalogue's category column is ``category``."""
        use_category = label in ("category", self.category_column)
        out: list[str | None] = []
        for pid in self.ids:
            p = self.products[pid]
            v = p.category if use_category else p.attributes.get(label)
            out.append(None if v is None or str(v).strip() == "" else str(v))
        if self.ids and all(v is None for v in out):
            known = sorted({a for p in self.products.values() for a in p.attributes})
            raise ValueError(f"no product of {self.root} has label {label!r}: use 'category'"
                             f"{' (' + self.category_column + ')' if self.category_column else ''} "
                             f"or one of the attributes {known}")
        return out

    def image_path(self, product_id: str) -> Path | None:
        p = self.products.get(product_id)
        if p is None or not p.image:
            return None
        try:
            return resolve_image_path(self.root, self.catalogue_root, p.image)
        except ValueError:
            return None


def select_queries(ids: list[str], labels: list[str | None], n: int, seed: int = 0,
                   among: set[str] | None = None) -> tuple[list[str], dict[str, int]]:
    """A seeded random sample of ``n`` products that have a label shared by at least one other product (and
    are in ``among``, when given: e.g. the products a trained encoder held out).

    Returns the query ids (sorted by position in ``ids``) and how many products were not eligible, and why.
    """
    if n < 1:
        raise ValueError(f"the number of queries must be >= 1, got {n}")
    counts: dict[str, int] = {}
    for v in labels:
        if v is not None:
            counts[v] = counts.get(v, 0) + 1
    eligible = [i for i, v in enumerate(labels) if v is not None and counts[v] >= 2]
    skipped = {"no_label": sum(v is None for v in labels),
               "label_of_one_product": sum(1 for v in labels if v is not None and counts[v] < 2)}
    if among is not None:
        skipped["seen_in_training"] = sum(1 for i in eligible if ids[i] not in among)
        eligible = [i for i in eligible if ids[i] in among]
        if not eligible:
            raise ValueError("no product this workspace holds was held out from the trained encoder's training: "
                             "evaluate it on products it has not seen")
    if not eligible:
        raise ValueError("no product has a label shared with another product: nothing to evaluate")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(eligible), size=min(n, len(eligible)), replace=False))
    return [ids[eligible[r]] for r in rows], skipped


@dataclass
class RetrievalResult:
    """Scores of one workspace on a fixed set of queries (rows align with ``query_ids``)."""

    name: str
    encoder: str
    query_ids: list[str]
    query_labels: list[str]
    top_ids: list[list[str]]  # each query's ranked results, query excluded
    hits: np.ndarray  # (queries, K) bool
    n_relevant: np.ndarray
    values: dict[str, np.ndarray]  # per-query metric values, keys like "P@10"
    overall: dict[str, float]
    per_category: dict[str, dict[str, float]]
    ann: dict[str, Any]
    latency: dict[str, dict[str, float]]
    timings_s: dict[str, float]


def evaluate_retrieval(lw: LoadedWorkspace, query_ids: list[str], db_ids: list[str], labels: dict[str, str | None],
                       ks: list[int], latency_queries: int = 500) -> RetrievalResult:
    """Rank ``db_ids`` for each query by exact search and score the ranking against same-label ground truth."""
    K = max(ks)
    timings: dict[str, float] = {}
    db_rows = np.asarray([lw.pos[i] for i in db_ids], np.int64)
    # without --compare the database is every vector in order: skip a copy of the whole matrix
    same = len(db_rows) == len(lw.ids) and bool(np.all(db_rows == np.arange(len(db_rows))))
    db = lw.vectors if same else lw.vectors[db_rows]
    lab = codes([labels[i] for i in db_ids])
    local = {pid: j for j, pid in enumerate(db_ids)}
    q_local = np.asarray([local[i] for i in query_ids], np.int64)

    t = time.perf_counter()
    scores, idx = topk_query(db, db[q_local], K + 1)
    timings["exact_search"] = round(time.perf_counter() - t, 3)
    ranked = np.full((len(q_local), K), -1, np.int64)
    for r, (row, qi) in enumerate(zip(idx, q_local)):
        rest = row[(row != qi) & (row >= 0)][:K]
        ranked[r, : len(rest)] = rest
    q_lab = lab[q_local]
    hits = (ranked >= 0) & (lab[np.maximum(ranked, 0)] == q_lab[:, None])
    sizes = np.bincount(lab[lab >= 0], minlength=int(lab.max()) + 1)
    n_rel = sizes[q_lab] - 1
    values = metrics.per_query(hits, n_rel, ks)
    q_names = [str(labels[i]) for i in query_ids]

    t = time.perf_counter()
    # over the whole workspace, this search (query included) is already the exact truth the index is held to
    exact = (scores[:, :K], idx[:, :K]) if same else None
    ann, latency = index_quality(lw, query_ids, ks, latency_queries, exact)
    timings["index_quality"] = round(time.perf_counter() - t, 3)
    return RetrievalResult(
        name=lw.name, encoder=lw.encoder, query_ids=list(query_ids), query_labels=q_names,
        top_ids=[[db_ids[j] for j in row if j >= 0] for row in ranked], hits=hits, n_relevant=n_rel,
        values=values, overall=metrics.summarise(values), per_category=metrics.by_group(values, q_names),
        ann=ann, latency=latency, timings_s=timings)


def index_quality(lw: LoadedWorkspace, query_ids: list[str], ks: list[int], latency_queries: int = 500,
                  exact: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Recall@k of the workspace's ANN index against exact search over all its vectors, and search latency."""
    K = max(ks)
    idx_dir = Workspace(lw.root).index_dir(lw.encoder)
    q = lw.vectors[[lw.pos[i] for i in query_ids]]
    exact_lat = _single_query_seconds(lambda v: topk_query(lw.vectors, v, K), q[:latency_queries])
    if not (idx_dir / INFOS).exists():
        log.warning("%s has no index at %s: ANN recall and index latency are left out", lw.root, idx_dir)
        return {"backend": None}, {"exact": metrics.latency_summary(exact_lat)}
    infos = Workspace(lw.root).read(idx_dir / INFOS)
    index = load_index(idx_dir)
    # index labels are positions in ids.json; map both sides to one id numbering before comparing
    index_ids = Workspace(lw.root).read(idx_dir / "ids.json").get("ids", lw.ids)
    to_pos = np.asarray([lw.pos.get(pid, -1) for pid in index_ids] + [-1], np.int64)
    _, found = index.search(q, K)
    found = to_pos[np.where(found >= 0, found, len(index_ids))]
    # score what the index returned exactly, so the comparison does not depend on the backend's arithmetic
    found_scores = _scores_of(q, lw.vectors, found)
    exact_scores, truth = exact if exact is not None else topk_query(lw.vectors, q, K)
    ann: dict[str, Any] = {"backend": infos.get("backend"), "params": infos.get("params"), "n": infos.get("n"),
                           "recall_definition": "tie-aware: a returned item counts when it scores at least the "
                                                "k-th exact score; recall_ids@k counts exact id matches"}
    for k in ks:
        ann[f"recall@{k}"] = round(metrics.recall_vs_exact(found_scores, exact_scores, k), 4)
        ann[f"recall_ids@{k}"] = round(recall_at_k(found[:, :k], truth[:, :k]), 4)
    index_lat = _single_query_seconds(lambda v: index.search(v, K), q[:latency_queries])
    return ann, {"index": metrics.latency_summary(index_lat), "exact": metrics.latency_summary(exact_lat)}


def _scores_of(q: np.ndarray, vectors: np.ndarray, rows: np.ndarray, block: int = 256) -> np.ndarray:
    """Inner products of each query with its listed rows (-1 -> -inf), in blocks to bound the gather."""
    out = np.full(rows.shape, -np.inf, np.float32)
    for a in range(0, len(q), block):
        r = rows[a : a + block]
        s = np.einsum("qd,qkd->qk", q[a : a + block], vectors[np.maximum(r, 0)])
        out[a : a + block] = np.where(r >= 0, s, -np.inf)
    return out


def _single_query_seconds(search: Any, queries: np.ndarray) -> list[float]:
    """Wall time of one-row searches, after one warm-up call (first-call allocations are not latency)."""
    if len(queries) == 0:
        return []
    search(queries[:1])
    out = []
    for v in queries:
        t = time.perf_counter()
        search(v[None, :])
        out.append(time.perf_counter() - t)
    return out
