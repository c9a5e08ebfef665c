"""Tune and measure the ``color-texture`` descriptor on fashion-product-images-small.

Metric: P@10 of the same articleType (and, as a colour check, the same baseColour), leave-one-out,
on a seeded random sample of products that have images, the whole sample being the database.

    .venv/bin/python benchmarks/bench_descriptors.py --n 6000 --seed 0
    .venv/bin/python benchmarks/bench_descriptors.py --n 6000 --speed-only

Blocks are extracted once per preprocessing variant (cached under --cache) and then mixed: since each
block is a unit vector scaled by w_b, the cosine of the concatenation is sum_b w_b^2 cos_b / sum_b w_b^2,
so a weight grid costs one matrix product per block instead of re-extracting descriptors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from lookalike.encoders.descriptors import (
    BLOCKS,
    ColorTextureEncoder,
    describe,
    describe_blocks,
    resolve_params,
)
from lookalike.imaging import load_image

log = logging.getLogger("bench_descriptors")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "fashion-product-images-small"


def load_sample(n: int, seed: int, data: Path = DATA) -> pd.DataFrame:
    df = pd.read_csv(data / "styles.csv", on_bad_lines="skip", usecols=["id", "articleType", "baseColour"])
    df["path"] = [data / "images" / f"{i}.jpg" for i in df["id"]]
    df = df[[p.exists() for p in df["path"]]]
    return df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)


def precision_at_k(sims: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Leave-one-out P@k: the query itself is excluded from its own neighbours."""
    sims = sims.copy()
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return float((labels[top] == labels[:, None]).mean())


def extract(paths: list[Path], p: dict, cache: Path) -> dict[str, np.ndarray]:
    key = hashlib.sha1(json.dumps({k: v for k, v in p.items() if k != "weights"}, sort_keys=True).encode()
                       + str(len(paths)).encode() + str(paths[0]).encode()).hexdigest()[:12]
    f = cache / f"blocks-{key}.npz"
    if f.exists():
        return dict(np.load(f))
    t = time.perf_counter()
    rows = [describe_blocks(Image.open(x).convert("RGB"), p) for x in paths]
    log.info("extracted %d images in %.1fs", len(paths), time.perf_counter() - t)
    out = {b: np.stack([r[b] for r in rows]) for b in BLOCKS}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, **out)
    return out


def baseline_thumb(paths: list[Path]) -> np.ndarray:
    """The reference point: the whole image squashed to a 16x16 grey thumbnail, L2-normalised."""
    x = np.stack([np.asarray(Image.open(q).convert("L").resize((16, 16), Image.BOX), np.float32).ravel()
                  for q in paths])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def mix(grams: dict[str, np.ndarray], w: dict[str, float]) -> np.ndarray:
    total = sum(v * v for v in w.values() if v > 0)
    return sum(grams[b] * (w[b] ** 2 / total) for b in w if w[b] > 0)


def tune_weights(grams: dict[str, np.ndarray], labels: np.ndarray, w: dict[str, float],
                 values: tuple[float, ...] = (0.0, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0), passes: int = 2,
                 ) -> tuple[dict[str, float], float]:
    """Coordinate ascent on the block weights (a full grid over five blocks is too slow here)."""
    best = precision_at_k(mix(grams, w), labels)
    for _ in range(passes):
        for b in BLOCKS:
            for v in values:
                trial = {**w, b: v}
                if v == w[b] or not any(x > 0 for x in trial.values()):
                    continue
                s = precision_at_k(mix(grams, trial), labels)
                if s > best + 1e-4:
                    best, w = s, trial
        log.info("  tuned so far: %s P@10 %.4f", w, best)
    return w, best


def speed(paths: list[Path], n: int = 1000) -> tuple[float, float]:
    """Images/s in this one process with default parameters: (decode + descriptor, descriptor alone)."""
    cfg = ColorTextureEncoder().preprocess
    t = time.perf_counter()
    imgs = [load_image(x) for x in paths[:n]]
    decode = time.perf_counter() - t
    t = time.perf_counter()
    for img in imgs:
        describe(img, cfg)
    desc = time.perf_counter() - t
    return len(imgs) / (decode + desc), len(imgs) / desc


def full_catalogue(sample: pd.DataFrame, workers: int) -> None:
    """Encode every product with ``workers`` processes (the real ``encode`` path), then P@10 of the
    sample's products as queries against the whole catalogue."""
    everything = load_sample(10**9, 0)
    paths = list(everything["path"])
    t = time.perf_counter()
    vecs = ColorTextureEncoder().encode(paths, batch_size=256, show_progress=False, num_workers=workers)
    dt = time.perf_counter() - t
    log.info("full catalogue: %d images in %.0fs with %d workers (%.0f img/s)", len(paths), dt, workers,
             len(paths) / dt)
    rows = everything.reset_index().set_index("id").loc[sample["id"], "index"].to_numpy()
    labels = everything["articleType"].to_numpy()
    for name, db in (("baseline 16x16 grey", baseline_thumb(paths)), ("color-texture", vecs)):
        hits = []
        for chunk in np.array_split(rows, max(1, len(rows) // 500)):
            sims = db[chunk] @ db.T
            sims[np.arange(len(chunk)), chunk] = -np.inf
            top = np.argpartition(-sims, 10, axis=1)[:, :10]
            hits.append(labels[top] == labels[chunk][:, None])
        log.info("%s: P@10 articleType, %d queries against all %d: %.3f", name, len(rows), len(paths),
                 float(np.concatenate(hits).mean()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lookalike-bench-descriptors"))
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--full", action="store_true", help="encode the whole catalogue with --workers processes")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variants", action="store_true", help="also try preprocessing variants")
    ap.add_argument("--base", type=json.loads, default={}, help="JSON parameters every variant starts from")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                    help="an extra preprocessing variant, e.g. 'hog48={\"hog_size\": 48}'")
    ap.add_argument("--sweep", action="append", default=[], choices=BLOCKS,
                    help="report a range of weights for this block, the others at their defaults")
    ap.add_argument("--grid", action="store_true", help="grid-search the block weights of each variant")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    df = load_sample(a.n, a.seed)
    paths = list(df["path"])
    log.info("images/s in 1 process: %.0f decode + descriptor, %.0f descriptor alone", *speed(paths))
    if a.speed_only:
        return
    if a.full:
        full_catalogue(df, a.workers)
        return
    art = df["articleType"].to_numpy()
    col = df["baseColour"].fillna("?").to_numpy()

    def report(name: str, sims: np.ndarray, dim: int) -> None:
        log.info("%-48s dim %5d  P@10 articleType %.3f  baseColour %.3f",
                 name, dim, precision_at_k(sims, art), precision_at_k(sims, col))

    b = baseline_thumb(paths)
    report("baseline: whole image 16x16 grey", b @ b.T, b.shape[1])

    variants: dict[str, dict] = {"default": {}}
    if a.variants:
        variants |= {
            "no crop": {"crop": False}, "squash crop": {"keep_aspect": False},
            "thumb grey": {"thumb_mode": "grey"}, "thumb centred": {"thumb_mode": "centred"},
            "thumb 24": {"thumb": 24}, "thumb 12": {"thumb": 12}, "margin 0": {"margin": 0.0},
            "power 1": {"power": 1.0}, "colour grid 1": {"colour_grid": 1}, "colour grid 3": {"colour_grid": 3},
            "hog 64/16": {"hog_size": 64, "hog_ppc": 16}, "hog 48/8": {"hog_size": 48, "hog_ppc": 8},
            "hog 32/8 cpb1": {"hog_cpb": 1}, "hog orient 12": {"hog_orient": 12},
            "lbp grid 1": {"lbp_grid": 1}, "lbp r2 p16": {"lbp_radius": 2, "lbp_points": 16},
        }
    for v in a.variant:
        name, _, js = v.partition("=")
        variants[name] = json.loads(js)
    default_w = resolve_params(a.base)["weights"]
    best: tuple[float, str, dict] = (0.0, "", {})
    for vname, extra in variants.items():
        p = resolve_params({**a.base, **extra})
        blocks = extract(paths, p, a.cache)
        grams = {k: v @ v.T for k, v in blocks.items()}
        dims = {k: v.shape[1] for k, v in blocks.items()}
        for k in BLOCKS:
            report(f"[{vname}] {k} alone", grams[k], dims[k])
        report(f"[{vname}] default weights {default_w}", mix(grams, default_w), sum(dims.values()))
        for blk in a.sweep:
            for v in (0.0, 0.25, 0.35, 0.5, 0.7, 1.0):
                w = {**default_w, blk: v}
                report(f"[{vname}] {blk}={v} {w}", mix(grams, w), sum(dims[k] for k in w if w[k] > 0))
        if not a.grid:
            continue
        w, score = tune_weights(grams, art, dict(default_w))
        results = [(score, w)]
        report(f"[{vname}] tuned {w}", mix(grams, w), sum(dims[k] for k in w if w[k] > 0))
        if results[0][0] > best[0]:
            best = (results[0][0], vname, results[0][1])
    if a.grid:
        log.info("best: %s", best)


if __name__ == "__main__":
    main()
