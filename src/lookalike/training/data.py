"""Training data: labels from the store, rare-class grouping, a product-disjoint split, and every image
decoded once into a uint8 array cached in the workspace, so that each epoch trains from RAM.

Rare classes: a label seen on fewer than ``min_count`` products is trained as the single class ``"other"``
(``OTHER``). The model still sees those products, the head never learns a class from a handful of photos,
and at prediction time ``"other"`` means "none of the classes I know" (see encoders/trained.py).
"""
from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lookalike.encoders.prep import PreprocessCfg, prepare_one, resize_to_array
from lookalike.io_utils import atomic_write, read_json, save_npy, write_json
from lookalike.store.sql import ProductRow, Store
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)

OTHER = "other"
CATEGORY = "category"
INPROCESS_BELOW = 512  # spawning decode workers costs about a second: small sets decode in-process


# ---- labels -----------------------------------------------------------------------------------------
def category_column(workspace: Path) -> str | None:
    """The catalogue column ingest mapped to ``ProductRow.category`` (``articleType`` for the fashion set)."""
    ws = Workspace(workspace)
    return (ws.read(ws.catalogue_json).get("mapping") or {}).get("category")


def label_of(row: ProductRow, label: str, category_col: str | None) -> str | None:
    """The product's category when ``label`` names it (``"category"`` or its source column), else the
    attribute of that name; empty values count as missing."""
    value = row.category if label in (CATEGORY, category_col) else row.attributes.get(label)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


@dataclass
class LabelMap:
    """Raw label -> trained class; classes are sorted, with ``"other"`` last when rare labels exist."""

    classes: list[str]
    grouped: dict[str, str]  # every raw label seen -> its class
    counts: dict[str, int]  # products per raw label
    min_count: int

    @classmethod
    def build(cls, raw: Sequence[str | None], min_count: int) -> LabelMap:
        counts = Counter(x for x in raw if x is not None)
        # a real label literally called "other" joins the rare group: one class, one meaning
        kept = sorted(k for k, n in counts.items() if n >= min_count and k != OTHER)
        grouped = {k: (k if k in kept else OTHER) for k in counts}
        classes = kept + ([OTHER] if OTHER in grouped.values() else [])
        if len(kept) < 2:
            raise ValueError(f"need at least 2 classes with >= {min_count} products to train a classifier, "
                             f"found {len(kept)} ({dict(counts.most_common(5))}); lower min_count or pick "
                             "another label, or use recipe='autoencoder'/'contrastive'")
        return cls(classes, grouped, dict(counts), min_count)

    def encode(self, raw: Sequence[str | None]) -> np.ndarray:
        """Class indices, -1 for a missing or unknown label."""
        idx = {c: i for i, c in enumerate(self.classes)}
        return np.asarray([idx[self.grouped[x]] if x in self.grouped else -1 for x in raw], dtype=np.int64)

    @property
    def rare(self) -> list[str]:
        return sorted(k for k, c in self.grouped.items() if c == OTHER)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "min_count": self.min_count, "rare_grouped_as_other": self.rare,
                "counts": self.counts}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelMap:
        rare = set(d.get("rare_grouped_as_other", []))
        counts = d.get("counts", {})
        grouped = {k: (OTHER if k in rare else k) for k in counts}
        return cls(list(d["classes"]), grouped, dict(counts), int(d.get("min_count", 0)))


# ---- the split --------------------------------------------------------------------------------------
def split_validation(ids: Sequence[str], hashes: Sequence[str | None], val_frac: float = 0.1,
                     seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out products: whole groups of products that share an image hash go to one side,
    so no validation photo has a copy in training. Deterministic for a given seed and set of products."""
    n = len(ids)
    if n == 0 or val_frac <= 0:
        return np.zeros(n, dtype=bool)
    keys = [h or f"id:{i}" for i, h in zip(ids, hashes)]
    groups: dict[str, list[int]] = {}
    for pos, k in enumerate(keys):
        groups.setdefault(k, []).append(pos)
    order = sorted(groups)
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    target = max(1, round(val_frac * n))
    taken = 0
    for g in rng.permutation(len(order)):
        if taken >= target:
            break
        members = groups[order[g]]
        mask[members] = True
        taken += len(members)
    return mask


HELDOUT_JSON = "heldout.json"


def heldout_ids(model_dir: Path) -> set[str] | None:
    """The product ids a trained model held out for validation, or None when that cannot be told.

    Why: a model has seen its training products, so retrieval measured from them is flattered; only the
    held-out ones measure it. Training writes ``heldout.json``; for a model trained before that, the split is
    recomputed from its training workspace (it depends only on the set of (id, image hash) pairs, the
    fraction and the seed), when that workspace still holds exactly as many decodable products."""
    model_dir = Path(model_dir)
    if (model_dir / HELDOUT_JSON).is_file():
        return set(read_json(model_dir / HELDOUT_JSON)["ids"])
    meta = read_json(model_dir / "training.json")
    data, cfg = meta.get("data") or {}, meta.get("config") or {}
    ws = Path(data.get("workspace", ""))
    if not (ws / "lookalike.db").is_file() or data.get("skipped_images"):
        return None
    rows = [r for r in read_products(ws, cfg.get("limit")) if r.image]
    if len(rows) != data.get("n_images"):
        return None
    mask = split_validation([r.id for r in rows], [r.image_hash for r in rows], cfg.get("val_frac", 0.1),
                            cfg.get("seed", 0))
    return {r.id for r, held in zip(rows, mask) if held}


# ---- the decoded image cache ----------------------------------------------------------------------
@dataclass
class Images:
    """Products whose image decoded, in store order, with their pixels at the training size."""

    ids: list[str]
    hashes: list[str | None]
    pixels: np.ndarray  # uint8 (n, H, W, 3)
    rows: list[ProductRow]
    errors: dict[str, str] = field(default_factory=dict)  # product id -> why its image was skipped


def cache_path(workspace: Path, cfg: PreprocessCfg) -> Path:
    h, w = cfg.size
    return Workspace(workspace).root / "cache" / f"images-{h}x{w}-{cfg.resize}-{cfg.interpolation}.npy"


def _decode_all(paths: list[str], cfg: PreprocessCfg, show_progress: bool) -> list[tuple[bool, Any]]:
    job = functools.partial(prepare_one, fn=functools.partial(resize_to_array, cfg=cfg), max_pixels=40_000_000)
    bar = tqdm(total=len(paths), desc="decode images", unit="img", disable=not show_progress, mininterval=1)
    out: list[tuple[bool, Any]] = []
    try:
        if len(paths) < INPROCESS_BELOW:
            for res in map(job, paths):
                out.append(res)
                bar.update()
            return out
        workers = max(1, min(4, os.cpu_count() or 1))
        # spawn: the caller holds torch threads, which a fork would copy in a broken state
        try:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                for res in pool.map(job, paths, chunksize=256):
                    out.append(res)
                    bar.update()
        except BrokenProcessPool as e:
            # a worker died (OOM killer, a __main__ that spawn cannot re-import): finish here, slower but whole
            log.warning("decode pool broke (%s); decoding the remaining %d images in-process", e, len(paths) - len(out))
            for res in map(job, paths[len(out):]):
                out.append(res)
                bar.update()
        return out
    finally:
        bar.close()


def load_images(data_ws: Path, cache_ws: Path, rows: Sequence[ProductRow], cfg: PreprocessCfg,
                show_progress: bool = True) -> Images:
    """Decode ``rows``' images at ``cfg`` (reusing the cache in ``cache_ws`` for unchanged image hashes).
    Missing or undecodable images are skipped, counted and logged, never fatal."""
    from lookalike.catalogue import image_resolver

    path = cache_path(cache_ws, cfg)
    meta_path = path.with_suffix(".json")
    cached: dict[tuple[str, str | None], int] = {}
    old: np.ndarray | None = None
    if path.exists() and meta_path.exists():
        meta = read_json(meta_path)
        old = np.load(path, mmap_mode="r")
        if len(meta["ids"]) == len(old):
            cached = {(i, h): n for n, (i, h) in enumerate(zip(meta["ids"], meta["hashes"]))}
    resolve = image_resolver(data_ws)
    todo: list[int] = []
    paths: list[str] = []
    errors: dict[str, str] = {}
    for pos, r in enumerate(rows):
        if (r.id, r.image_hash) in cached:
            continue
        if not r.image:
            errors[r.id] = "no image"
            continue
        try:
            paths.append(str(resolve(r.image)))
            todo.append(pos)
        except ValueError as e:
            errors[r.id] = str(e)
    decoded = dict(zip(todo, _decode_all(paths, cfg, show_progress))) if todo else {}
    keep: list[int] = []
    arrays: list[np.ndarray] = []
    for pos, r in enumerate(rows):
        if (r.id, r.image_hash) in cached and old is not None:
            arrays.append(np.asarray(old[cached[(r.id, r.image_hash)]]))
            keep.append(pos)
        elif pos in decoded:
            ok, val = decoded[pos]
            if ok:
                arrays.append(val)
                keep.append(pos)
            else:
                errors[r.id] = val
    h, w = cfg.size
    pixels = np.stack(arrays) if arrays else np.zeros((0, h, w, 3), np.uint8)
    kept = [rows[p] for p in keep]
    if errors:
        log.warning("%d of %d product images skipped (first: %s)", len(errors), len(rows), next(iter(errors.items())))
    if todo:
        # pixels first, index last: an index naming rows that are not there is never read
        atomic_write(path, functools.partial(save_npy, array=pixels))
        write_json(meta_path, {"ids": [r.id for r in kept], "hashes": [r.image_hash for r in kept],
                               "preprocess": cfg.to_dict()})
    return Images([r.id for r in kept], [r.image_hash for r in kept], pixels, kept, errors)


def read_products(workspace: Path, limit: int | None = None) -> list[ProductRow]:
    store = Store.for_workspace(workspace)
    try:
        rows = []
        for r in store.iter_products():
            rows.append(r)
            if limit is not None and len(rows) >= limit:
                break
        return rows
    finally:
        store.engine.dispose()
