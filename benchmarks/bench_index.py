"""Compare the index backends on one set of vectors: build time, recall@10 vs exact, QPS, ratio to faiss Flat.

    .venv/bin/python benchmarks/bench_index.py --n 44000 --dim 512
    .venv/bin/python benchmarks/bench_index.py --vectors vectors.npy --only faiss-flat,faiss-hnsw,hnswlib

Generated vectors are random but clustered (Gaussian blobs around random centres, then L2-normalised), so
neighbourhoods are structured the way image embeddings are rather than uniformly spread. Times are printed,
never asserted: this machine's other load moves them.
"""
from __future__ import annotations

import argparse
import gc
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.auto import choose_nlist, choose_nprobe, fmt_bytes
from lookalike.index.build import build_index


def clustered(n: int, dim: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def configs(n: int, dim: int) -> dict[str, tuple[str, dict[str, Any]]]:
    nlist = choose_nlist(n)
    nprobe = choose_nprobe(nlist)
    pq = next(m for m in (64, 48, 32, 16, 8, 4, 2, 1) if dim % m == 0 and m <= max(1, dim // 2))
    return {
        "faiss-flat": ("faiss", {"factory": "Flat"}),
        "exact-numpy": ("exact", {}),
        "faiss-hnsw": ("faiss", {"factory": "HNSW32", "efConstruction": 80, "efSearch": 64}),
        "faiss-ivf-flat": ("faiss", {"factory": f"IVF{nlist},Flat", "nprobe": nprobe}),
        "faiss-ivf-sq8": ("faiss", {"factory": f"IVF{nlist},SQ8", "nprobe": nprobe}),
        "faiss-ivf-pq": ("faiss", {"factory": f"IVF{nlist},PQ{pq}", "nprobe": nprobe}),
        "hnswlib": ("hnswlib", {}),
        "annoy": ("annoy", {}),
        "auto": ("auto", {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=44_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--vectors", type=Path, help=".npy of float vectors (overrides --n/--dim)")
    ap.add_argument("--clusters", type=int, default=0, help="blobs in generated data (default n/100)")
    ap.add_argument("--spread", type=float, default=1.0, help="noise std around each centre (per dimension)")
    ap.add_argument("--queries", type=int, default=1000, help="rows used as queries for recall and QPS")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--max-memory", default="4G", help="budget given to 'auto'")
    ap.add_argument("--only", default="", help="comma list of configs to run (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")

    if args.vectors:
        x = np.load(args.vectors).astype(np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        source = str(args.vectors)
    else:
        clusters = args.clusters or max(10, args.n // 100)
        x = clustered(args.n, args.dim, clusters, args.spread, args.seed)
        source = f"clustered random: {clusters} blobs, spread {args.spread}"
    n, dim = x.shape
    todo = configs(n, dim)
    if args.only:
        todo = {name: todo[name] for name in args.only.split(",")}
    print(f"# {n:,} x {dim} ({source}); {min(args.queries, n)} queries, k={args.k}")

    rows = []
    for label, (backend, params) in todo.items():
        t0 = time.perf_counter()
        try:
            index, info = build_index(x, None, name=backend, params=params, max_memory=args.max_memory,
                                      recall_sample=args.queries, k=args.k, seed=args.seed)
        except Exception as e:  # noqa: BLE001 - one backend failing must not hide the others' numbers
            print(f"{label}: failed: {e}")
            continue
        rows.append({"label": label, "what": f"{info['backend']} {info['params'].get('factory', '')}".strip(),
                     "build_s": info["timings"]["build"], "recall": info[f"recall_at_{args.k}"],
                     "qps1": 1000.0 / max(info["ms_per_query"], 1e-9), "qpsb": info["qps_batched"],
                     "bytes": info["bytes"], "wall": time.perf_counter() - t0})
        del index
        gc.collect()

    ref = next((r for r in rows if r["label"] == "faiss-flat"), None)
    head = (f"{'config':<15} {'index':<22} {'build s':>8} {'recall@' + str(args.k):>9} {'QPS 1':>8} "
            f"{'QPS batch':>10} {'x flat 1':>8} {'x flat b':>8} {'memory':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        r1 = f"{r['qps1'] / ref['qps1']:.2f}" if ref else "-"
        rb = f"{r['qpsb'] / ref['qpsb']:.2f}" if ref else "-"
        print(f"{r['label']:<15} {r['what'][:22]:<22} {r['build_s']:>8.2f} {r['recall']:>9.3f} {r['qps1']:>8.0f} "
              f"{r['qpsb']:>10.0f} {r1:>8} {rb:>8} {fmt_bytes(r['bytes']):>11}")


if __name__ == "__main__":
    main()
