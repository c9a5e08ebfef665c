"""Category routing for photo search from a pretrained ImageNet classifier (``lookalike fit-router``).

Photo search works best inside the shopper's category (``route=auto``), so it has to guess that category
from a phone photo. An encoder trained on the catalogue learns the catalogue's studio cues: on real shoppers'
photos the trained models of issue 8 predicted "Backpacks" for shoes and hats laid on a floor, because in the
studio only bags lie flat. ImageNet's 1,000 classes were learned from photos taken everywhere, and a T-shirt on
a bed is still "jersey, T-shirt" to them. The router is a multinomial logistic regression from those logits to
the catalogue's categories, fitted on a sample of the catalogue: the strong L2 pull (``C``) keeps it a sparse
reading of ImageNet's own classes rather than a new studio detector.

Its routing threshold is calibrated like a trained encoder's (``training/routing.py``): on held-out catalogue
products, never on shoppers' photos. The Recommender uses a router when the workspace has one
(``WS/models/router``) and the request asks for ``route=auto``; when the workspace's encoder predicts categories
too, the two are combined (``combine_predictions``) and the router's threshold applies to the result.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from tqdm.auto import tqdm

from lookalike.encoders import Encoder, create_encoder, l2_normalise
from lookalike.encoders.prep import ImageLike, prepare_one
from lookalike.io_utils import read_json, write_json
from lookalike.training.routing import calibrate_routing

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "timm:tf_efficientnet_lite0"
DEFAULT_IMAGE_SIZE = 128  # a third of 224's latency on a 2-core CPU; see the README for both measured
ROUTER_DIR = "router"
MODEL_NPZ, MODEL_JSON = "router.npz", "router.json"


@dataclass
class CategoryRouter:
    """A linear map from an encoder's class logits to catalogue categories, and its calibrated threshold."""

    encoder_name: str
    encoder_kwargs: dict[str, Any]
    classes: list[str]
    coef: np.ndarray  # (n_classes, n_logits)
    intercept: np.ndarray  # (n_classes,)
    route_threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    _encoder: Encoder | None = field(default=None, repr=False)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = create_encoder(self.encoder_name, **self.encoder_kwargs)
        return self._encoder

    def scores(self, logits: np.ndarray) -> np.ndarray:
        return np.asarray(logits, np.float64) @ self.coef.T + self.intercept

    def predict_logits(self, logits: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        probs = softmax(self.scores(logits), axis=1)
        order = np.argsort(-probs, axis=1)[:, :top]
        return [[(self.classes[c], float(p[c])) for c in row] for p, row in zip(probs, order)]

    def predict(self, images: list[ImageLike], top: int = 3) -> list[list[tuple[str, float]]]:
        """Top categories with probabilities per image; raises ValueError on an undecodable image."""
        logits, bad = class_logits(self.encoder, images)
        if bad:
            raise ValueError(f"image #{bad[0][0]} could not be decoded: {bad[0][1]}")
        return self.predict_logits(logits, top)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / MODEL_NPZ, coef=self.coef.astype(np.float32), intercept=self.intercept.astype(np.float32))
        write_json(folder / MODEL_JSON, {"encoder": self.encoder_name, "encoder_kwargs": self.encoder_kwargs,
                                         "classes": self.classes, "route_threshold": self.route_threshold, "info": self.info})

    @classmethod
    def load(cls, folder: Path) -> CategoryRouter:
        if not (Path(folder) / MODEL_JSON).is_file():
            raise FileNotFoundError(f"no router in {folder}: run `lookalike fit-router WS`")
        meta = read_json(Path(folder) / MODEL_JSON)
        with np.load(Path(folder) / MODEL_NPZ) as z:
            coef, intercept = z["coef"].astype(np.float64), z["intercept"].astype(np.float64)
        return cls(meta["encoder"], meta.get("encoder_kwargs", {}), meta["classes"], coef, intercept,
                   float(meta["route_threshold"]), meta.get("info", {}))


def class_logits(enc: Encoder, images: list[ImageLike], batch_size: int = 64,
                 show_progress: bool = False) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(logits of the decodable images in input order, [(position, reason) of the others])."""
    if not hasattr(enc, "class_logits"):
        raise ValueError(f"encoder {enc.name} has no classifier head to route with; use a timm: encoder")
    fn, out, bad = enc.worker_fn(), [], []
    batch: list[np.ndarray] = []
    for pos, item in enumerate(tqdm(images, desc="router logits", unit="img", disable=not show_progress)):
        ok, val = prepare_one(item, fn, enc.max_pixels)
        if ok:
            batch.append(val)
        else:
            bad.append((pos, val))
        if batch and (len(batch) == batch_size or pos == len(images) - 1):
            out.append(enc.class_logits(np.stack(batch)))  # type: ignore[attr-defined]
            batch = []
    return (np.concatenate(out) if out else np.zeros((0, 0), np.float32)), bad


def fit_logistic(x: np.ndarray, labels: list[str], c: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=1000).fit(x, labels)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if len(model.classes_) == 2:  # sklearn keeps one row, the second class's log-odds: make it a 2-way softmax
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return [str(k) for k in model.classes_], coef, intercept


def fit_router(workspace: Path, encoder: str = DEFAULT_ENCODER, image_size: int = DEFAULT_IMAGE_SIZE,
               sample: int = 8000, min_count: int = 5, c: float = 0.1, held_out: float = 0.2, seed: int = 0,
               show_progress: bool = True, store_url: str | None = None, **encoder_kwargs: Any) -> CategoryRouter:
    """Fit a router on ``sample`` random catalogue products, calibrate it on ``held_out`` of them, save it.

    Categories with fewer than ``min_count`` products in the sample are left out: the router never routes to
    them, and a photo of one is searched among its best guesses or globally.
    """
    from lookalike.catalogue import resolve_image_path
    from lookalike.store.sql import Store
    from lookalike.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.build_json.exists():
        raise FileNotFoundError(f"{ws.root} is not a built workspace: run `lookalike build` first")
    store = Store.for_workspace(ws.root, store_url)
    root = Path(ws.read(ws.catalogue_json).get("root", ws.root))
    rows = [p for p in store.iter_products() if p.image and p.category]
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in sorted(rng.choice(len(rows), min(sample, len(rows)), replace=False))]
    counts = Counter(p.category for p in rows)
    rows = [p for p in rows if counts[p.category] >= min_count]
    if len({p.category for p in rows}) < 2:
        raise ValueError(f"the sample has fewer than 2 categories with >= {min_count} products: nothing to route")
    kwargs = {"image_size": image_size, **encoder_kwargs}
    enc = create_encoder(encoder, **kwargs)
    if not getattr(enc, "has_trained_head", False):
        log.warning("%s has no pretrained classifier head: the router reads random logits", encoder)
    paths = [resolve_image_path(ws.root, root, p.image) for p in rows]  # type: ignore[arg-type]
    logits, bad = class_logits(enc, paths, show_progress=show_progress)
    skipped = {pos for pos, _ in bad}
    labels = [str(p.category) for i, p in enumerate(rows) if i not in skipped]
    test = rng.random(len(labels)) < held_out
    train = ~test
    classes, coef, intercept = fit_logistic(logits[train], [x for x, t in zip(labels, train) if t], c)
    router = CategoryRouter(encoder, kwargs, classes, coef, intercept, 0.5, _encoder=enc)
    held = [x for x, t in zip(labels, test) if t]
    calib = calibrate_routing(l2_normalise(logits[train]), [x for x, t in zip(labels, train) if t],
                              l2_normalise(logits[test]), router.scores(logits[test]), held, None, classes)
    router.route_threshold = float(calib["threshold"])
    top1 = [p[0][0] for p in router.predict_logits(logits[test], top=1)]
    router.info = {"products": len(labels), "skipped_images": len(bad), "categories": len(classes),
                   "held_out": len(held), "held_out_accuracy": float(np.mean([a == b for a, b in zip(top1, held)])),
                   "calibration": {k: v for k, v in calib.items() if k != "curve"}, "c": c, "seed": seed,
                   "weights": getattr(enc, "weights_source", None)}
    if bad:
        log.warning("router: %d of %d images could not be read and were skipped", len(bad), len(rows))
    router.save(ws.models_dir(ROUTER_DIR))
    log.info("router fitted on %d products, %d categories: held-out accuracy %.3f, threshold %.2f",
             len(labels), len(classes), router.info["held_out_accuracy"], router.route_threshold)
    return router


def combine_predictions(a: list[tuple[str, float]], b: list[tuple[str, float]],
                        floor: float = 1e-6) -> list[tuple[str, float]]:
    """Two experts' category distributions -> their renormalised geometric mean, best first. A category only
    one of them lists gets ``floor`` from the other: both must find it plausible."""
    da, db = dict(a), dict(b)
    keys = sorted(da.keys() | db.keys())
    s = np.asarray([0.5 * (np.log(da.get(k, 0.0) + floor) + np.log(db.get(k, 0.0) + floor)) for k in keys])
    p = np.exp(s - s.max())
    p /= p.sum()
    return [(keys[i], float(p[i])) for i in np.argsort(-p, kind="stable")]


def load_router(workspace: Path) -> CategoryRouter | None:
    """The workspace's router, or None when ``fit-router`` was never run there."""
    from lookalike.workspace import Workspace

    folder = Workspace(workspace).models_dir(ROUTER_DIR)
    return CategoryRouter.load(folder) if (folder / MODEL_JSON).is_file() else None
