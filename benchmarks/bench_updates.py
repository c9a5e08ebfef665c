"""Live catalogue updates against a real `lookalike serve` at 50k products: adds per second, and the time
from a 2xx to the new product showing in a similar list.

The 50k base is synthetic: ``--images`` generated product photos (lookalike.demo) are built into a workspace
with the color-texture encoder, then the rest of the products are *vectors only* (a random base photo's
vector plus Gaussian noise, re-normalised, same category and attributes), and the similar lists are
recomputed over all of them. The products added during the benchmark are real generated photos, embedded by
the server as any POST is.

    .venv/bin/python benchmarks/bench_updates.py --workspace /work/ws/live/bench50k [--adds 200] [--clients 4]

Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from lookalike.demo import COLOURS, SHAPES, draw_product, make_catalogue
from lookalike.index.build import build_index
from lookalike.pipeline import build, load_vectors, similar_all
from lookalike.recommend.similarity_pct import SimilarityScale
from lookalike.service.security import hash_key
from lookalike.store.sql import ProductRow, Store
from lookalike.store.vectors import VectorStore
from lookalike.workspace import Workspace

log = logging.getLogger("bench_updates")
KEY = "bench-updates-key"
ENCODER = "color-texture"


def make_workspace(ws: Path, n: int, images: int, noise: float, seed: int) -> None:
    """``images`` real generated products, then synthetic vector-only products up to ``n``."""
    if (ws / "build.json").exists() and Store.for_workspace(ws).count() >= n:
        log.info("reusing %s", ws)
        return
    t0 = time.perf_counter()
    csv = make_catalogue(ws.parent / f"{ws.name}-catalogue", n=images, seed=seed)
    build(csv, ws, encoder=ENCODER, k=20, show_progress=False)
    store = Store.for_workspace(ws)
    base_ids, base = load_vectors(ws, ENCODER, store)
    base_rows = store.get_products(base_ids)
    rng = np.random.default_rng(seed)
    m = n - len(base_ids)
    pick = rng.integers(len(base_ids), size=m)
    # a point between two photos of the same shape and colour, plus a little noise: synthetic products lie
    # among real ones, so a new photo enters about as many lists as any product does (pure noise around
    # a few photos would make every new, clean photo a hub that enters thousands of lists)
    group = [(base_rows[i].category, base_rows[i].attributes.get("colour")) for i in base_ids]
    members: dict[object, list[int]] = {}
    for i, g in enumerate(group):
        members.setdefault(g, []).append(i)
    mate = np.asarray([members[group[i]][int(rng.integers(len(members[group[i]])))] for i in pick.tolist()])
    a = rng.uniform(0, 1, size=(m, 1)).astype(np.float32)
    vecs = a * base[pick] + (1 - a) * base[mate] + rng.normal(0, noise, size=(m, base.shape[1])).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"syn{i:06d}" for i in range(m)]
    rows = [ProductRow(pid, f"synthetic {pid}", base_rows[base_ids[j]].category, None, f"syn-{pid}",
                       {**base_rows[base_ids[j]].attributes, "in_stock": True}) for pid, j in zip(ids, pick.tolist())]
    store.upsert_products(rows)
    VectorStore.for_encoder(ws, ENCODER).append(ids, [r.image_hash for r in rows], vecs)
    all_ids, all_vecs = load_vectors(ws, ENCODER, store)
    idx_dir = Workspace(ws).index_dir(ENCODER)
    _, infos = build_index(all_vecs, np.arange(len(all_ids)), name="auto", path=idx_dir)
    Workspace(ws).write(idx_dir / "ids.json", {"ids": all_ids})
    SimilarityScale.fit(all_vecs).save(idx_dir / "similarity.json")
    sim = similar_all(ws, ENCODER, store, k=20, vectors=(all_ids, all_vecs), show_progress=False)
    info = Workspace(ws).read(Workspace(ws).build_json)
    Workspace(ws).write(Workspace(ws).build_json, {**info, "similar": sim, "index": infos,
                                                   "synthetic": {"products": m, "noise": noise}})
    log.info("made %s: %d products (%d synthetic), index %s, in %.0fs", ws, len(all_ids), m, infos["backend"],
             time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png(i: int) -> bytes:
    rng = np.random.default_rng(10_000 + i)
    buf = io.BytesIO()
    draw_product(SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS.values())[int(rng.integers(len(COLOURS)))],
                 rng).save(buf, "PNG")
    return buf.getvalue()


LISTS_CHANGED: list[int] = []


def add(c: httpx.Client, pid: str, i: int) -> float:
    t = time.perf_counter()
    r = c.post("/api/products", headers={"X-API-Key": KEY}, files={"image": ("p.png", png(i), "image/png")},
               data={"product": json.dumps({"id": pid, "title": pid, "category": "circle"})})
    if r.status_code != 201:
        raise RuntimeError(f"add {pid}: {r.status_code} {r.text}")
    LISTS_CHANGED.append(int(r.json()["lists_changed"]))
    return time.perf_counter() - t


def visible_after(c: httpx.Client, pid: str, timeout: float = 5.0) -> tuple[float, float, bool]:
    """(s until in its own list, s until in its nearest neighbour's list, whether it ever showed there)."""
    t0 = time.perf_counter()
    own = c.get(f"/api/products/{pid}/similar", params={"k": 1, "rerank": "none"}).json()["data"]
    t_own = time.perf_counter() - t0
    nb = own[0]["product"]["id"]
    while time.perf_counter() - t0 < timeout:
        got = c.get(f"/api/products/{nb}/similar", params={"k": 20, "rerank": "none"}).json()["data"]
        if pid in {it["product"]["id"] for it in got}:
            return t_own, time.perf_counter() - t0, True
    return t_own, timeout, False


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--noise", type=float, default=0.002, help="per-dimension Gaussian noise on synthetic vectors")
    ap.add_argument("--adds", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the figures
    ws = args.workspace.resolve()
    make_workspace(ws, args.n, args.images, args.noise, args.seed)

    port = free_port()
    env = {**os.environ, "LOOKALIKE_API_KEYS": json.dumps([hash_key(KEY)])}
    logf = ws.parent / f"{ws.name}-server.log"
    proc = subprocess.Popen([str(Path(sys.executable).with_name("lookalike")), "serve", str(ws), "--port", str(port)],
                            env=env, stdout=logf.open("ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                h = httpx.get(f"{base}/health", timeout=2)
                if h.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 900:
                raise SystemExit(f"server did not start: see {logf}")
            time.sleep(0.5)
        print(f"server ready in {time.perf_counter() - t0:.0f}s: {h.json()}")
        run = int(time.time())
        with httpx.Client(base_url=base, timeout=60) as c:
            # 1) sequential adds, each followed by the visibility probe
            lat, own, nb, shown = [], [], [], 0
            t_all = 0.0
            for i in range(args.adds):
                pid = f"live-{run}-{i}"
                dt = add(c, pid, i)
                t_all += dt
                lat.append(dt)
                o, v, ok = visible_after(c, pid)
                own.append(o)
                if ok:
                    nb.append(v)
                    shown += 1
            print(f"\nsequential: {args.adds} adds, {args.adds / t_all:.1f} adds/s (POST latency p50 {pct(lat, 50):.0f} ms,"
                  f" p99 {pct(lat, 99):.0f} ms)")
            print(f"2xx -> in its own similar list: p50 {pct(own, 50):.1f} ms, max {pct(own, 100):.1f} ms "
                  "(one GET: the list exists when the POST returns)")
            if nb:
                print(f"2xx -> in its nearest neighbour's list: {shown}/{args.adds} showed there; p50 {pct(nb, 50):.1f} ms,"
                      f" p99 {pct(nb, 99):.1f} ms, max {pct(nb, 100):.1f} ms")
        # 2) concurrent adds
        done: list[float] = []

        def worker(w: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                for i in range(args.adds // args.clients):
                    done.append(add(c, f"conc-{run}-{w}-{i}", 100_000 + w * 10_000 + i))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        el = time.perf_counter() - t0
        print(f"{args.clients} concurrent clients: {len(done)} adds in {el:.1f}s = {len(done) / el:.1f} adds/s "
              f"(POST latency p50 {pct(done, 50):.0f} ms, p99 {pct(done, 99):.0f} ms)")
        lc = np.asarray(LISTS_CHANGED)
        print(f"lists changed per add (its own included): mean {lc.mean():.1f}, median {np.median(lc):.0f}, "
              f"p99 {np.percentile(lc, 99):.0f}, max {lc.max()}")
        print(f"catalogue now {httpx.get(f'{base}/health').json()['products']} products; server log {logf}")
    finally:
        proc.terminate()
        proc.wait(120)


if __name__ == "__main__":
    main()
