"""Category routing for photo search from a pretrained ImageNet classifier (``lookalike fit-router``).

Photo search works best inside the shopper's category (``route=auto``), so it has to guess that category
from a phone photo. An encoder trained on the catalogue learns the catalogue's studio cues: on real shoppers'
photos the trained models of issue 8 predicted "Backpacks" for shoes and hats laid on a floor, because in the
studio only bags lie flat. ImageNet's 1,000 classes were learned from photos taken everywhere, and a T-shirt on
a bed is still "jersey, T-shirt" to them. The router is a multinomial logistic regression from that network's
features to the catalogue's categories, fitted on a sample of the catalogue as shot and re-staged as a shopper
might photograph it. It reads the standardised pooled features (``features="pooled"``, the default) or the 1,000
ImageNet logits (``"logits"``, the first version): fitted alike on 8,000 products, the pooled features route
0.48 of the dev photos right, the logits 0.42. A strong L2 pull (``C``) keeps it from becoming a new studio
detector.

Its routing threshold is calibrated like a trained encoder's (``training/routing.py``): on held-out catalogue
products, never on shoppers' photos. The Recommender uses a router when the workspace has one
(``WS/models/router``) and the request asks for ``route=auto``, in place of the workspace encoder's own
category guess.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
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
FEATURES = ("pooled", "logits")
DEFAULT_C = {"pooled": 0.003, "logits": 0.1}  # pooled: best of 0.001-0.03 on re-staged held-out products


@dataclass
class CategoryRouter:
    """A linear map from an encoder's features (``features``: its pooled embedding or its class logits) to
    catalogue categories, and its calibrated threshold."""

    encoder_name: str
    encoder_kwargs: dict[str, Any]
    classes: list[str]
    coef: np.ndarray  # (n_classes, n_features)
    intercept: np.ndarray  # (n_classes,)
    route_threshold: float
    features: str = "logits"  # routers fitted before pooled features existed read logits
    info: dict[str, Any] = field(default_factory=dict)
    _encoder: Encoder | None = field(default=None, repr=False)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = create_encoder(self.encoder_name, **self.encoder_kwargs)
        return self._encoder

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.coef.T + self.intercept

    def predict_inputs(self, x: np.ndarray, top: int = 3) -> list[list[tuple[str, float]]]:
        """Top categories with probabilities from the encoder's outputs (``router_inputs``)."""
        probs = softmax(self.scores(x), axis=1)
        order = np.argsort(-probs, axis=1)[:, :top]
        return [[(self.classes[c], float(p[c])) for c in row] for p, row in zip(probs, order)]

    def predict(self, images: list[ImageLike], top: int = 3) -> list[list[tuple[str, float]]]:
        """Top categories with probabilities per image; raises ValueError on an undecodable image."""
        x, bad = router_inputs(self.encoder, images, self.features)
        if bad:
            raise ValueError(f"image #{bad[0][0]} could not be decoded: {bad[0][1]}")
        return self.predict_inputs(x, top)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / MODEL_NPZ, coef=self.coef.astype(np.float32), intercept=self.intercept.astype(np.float32))
        write_json(folder / MODEL_JSON, {"encoder": self.encoder_name, "encoder_kwargs": self.encoder_kwargs,
                                         "classes": self.classes, "route_threshold": self.route_threshold,
                                         "features": self.features, "info": self.info})

    @classmethod
    def load(cls, folder: Path) -> CategoryRouter:
        if not (Path(folder) / MODEL_JSON).is_file():
            raise FileNotFoundError(f"no router in {folder}: run `lookalike fit-router WS`")
        meta = read_json(Path(folder) / MODEL_JSON)
        with np.load(Path(folder) / MODEL_NPZ) as z:
            coef, intercept = z["coef"].astype(np.float64), z["intercept"].astype(np.float64)
        return cls(meta["encoder"], meta.get("encoder_kwargs", {}), meta["classes"], coef, intercept,
                   float(meta["route_threshold"]), meta.get("features", "logits"), meta.get("info", {}))


def _prepared_batches(enc: Encoder, images: list[ImageLike], batch_size: int, show_progress: bool,
                      bad: list[tuple[int, str]]) -> Iterator[np.ndarray]:
    """The encoder's worker step over ``images`` as stacked batches, in order; undecodable ones go to ``bad``."""
    fn, batch = enc.worker_fn(), []
    for pos, item in enumerate(tqdm(images, desc="router features", unit="img", disable=not show_progress)):
        ok, val = prepare_one(item, fn, enc.max_pixels)
        if ok:
            batch.append(val)
        else:
            bad.append((pos, val))
        if batch and (len(batch) == batch_size or pos == len(images) - 1):
            yield np.stack(batch)
            batch = []


def _outputs(enc: Encoder, batch: np.ndarray, features: str) -> np.ndarray:
    return enc.class_logits(batch) if features == "logits" else enc._embed(batch)  # type: ignore[attr-defined]


def router_inputs(enc: Encoder, images: list[ImageLike], features: str, batch_size: int = 64,
                  show_progress: bool = False) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """(the router's inputs for the decodable images in input order, [(position, reason) of the others])."""
    _check_features(features, enc)
    bad: list[tuple[int, str]] = []
    out = [_outputs(enc, b, features) for b in _prepared_batches(enc, images, batch_size, show_progress, bad)]
    return (np.concatenate(out) if out else np.zeros((0, 0), np.float32)), bad


class Restager:
    """uint8 (B, H, W, 3) studio shots -> the same shots re-staged as a shopper might take them: cut out,
    composited on generated textures or the room photos in ``backgrounds``, tilted, relit
    (``training/domain.py``). Deterministic for a seed."""

    def __init__(self, backgrounds: Path | None = None, seed: int = 0) -> None:
        import torch

        from lookalike.training.domain import DomainCfg, ShopperAugment
        from lookalike.training.features import background_bank

        self.aug = ShopperAugment(DomainCfg(), background_bank(str(backgrounds) if backgrounds else None))
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = self.aug(torch.from_numpy(batch), self.gen).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
        return x.permute(0, 2, 3, 1).numpy()


def shopper_inputs(enc: Encoder, images: list[ImageLike], features: str, views: int,
                   restage: Restager | None = None, batch_size: int = 64, show_progress: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """The router's inputs for each decodable image as shot (n, D) and for ``views`` re-stagings of it
    (views, n, D). Images are decoded once for all views."""
    _check_features(features, enc)
    if views and restage is None:
        restage = Restager()
    bad: list[tuple[int, str]] = []
    clean: list[np.ndarray] = []
    staged: list[list[np.ndarray]] = [[] for _ in range(views)]
    for b in _prepared_batches(enc, images, batch_size, show_progress, bad):
        clean.append(_outputs(enc, b, features))
        for v in range(views):
            staged[v].append(_outputs(enc, restage(b), features))  # type: ignore[misc]
    if not clean:
        return np.zeros((0, 0), np.float32), np.zeros((views, 0, 0), np.float32), bad
    shot = np.concatenate(clean)
    return shot, np.stack([np.concatenate(s) for s in staged]) if views else np.zeros((0, *shot.shape)), bad


def _check_features(features: str, enc: Encoder | None = None) -> None:
    if features not in FEATURES:
        raise ValueError(f"unknown router features {features!r}; valid: {', '.join(FEATURES)}")
    if features == "logits" and enc is not None and not hasattr(enc, "class_logits"):
        raise ValueError(f"encoder {enc.name} has no classifier head to route with; use a timm: encoder")


def fit_logistic(x: np.ndarray, labels: list[str], c: float, standardise: bool = False
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A multinomial logistic regression as (classes, coef, intercept) acting on raw ``x``: with
    ``standardise``, it is fitted on standardised columns and the scaling is folded into the weights."""
    from sklearn.linear_model import LogisticRegression

    mean, std = (x.mean(0), x.std(0)) if standardise else (np.zeros(x.shape[1]), np.ones(x.shape[1]))
    std[std == 0] = 1.0  # a dead feature (a ReLU that never fires on the sample) stays 0
    model = LogisticRegression(C=c, max_iter=2000).fit((x - mean) / std, labels)
    coef, intercept = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
    if len(model.classes_) == 2:  # sklearn keeps one row, the second class's log-odds: make it a 2-way softmax
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    coef = coef / std
    return [str(k) for k in model.classes_], coef, intercept - coef @ mean


def _sample(rows: list[Any], sample: int, min_count: int, per_category: int, rng: np.random.Generator) -> list[int]:
    """Sorted positions of a random sample of ``rows``, topped up to ``per_category`` per category that has at
    least ``min_count`` products."""
    picked = set(rng.choice(len(rows), min(sample, len(rows)), replace=False).tolist())
    members: dict[str, list[int]] = {}
    for i, p in enumerate(rows):
        members.setdefault(str(p.category), []).append(i)
    for pos in members.values():
        short = min(per_category, len(pos)) - sum(i in picked for i in pos)
        if len(pos) >= min_count and short > 0:
            picked.update(rng.choice([i for i in pos if i not in picked], short, replace=False).tolist())
    return sorted(picked)


def fit_router(workspace: Path, encoder: str = DEFAULT_ENCODER, image_size: int = DEFAULT_IMAGE_SIZE,
               sample: int = 16000, min_count: int = 5, per_category: int = 20, c: float | None = None,
               held_out: float = 0.2, seed: int = 0, shopper_views: int = 1, backgrounds: Path | None = None,
               features: str = "pooled", show_progress: bool = True, store_url: str | None = None,
               **encoder_kwargs: Any) -> CategoryRouter:
    """Fit a router on ``sample`` random catalogue products, calibrate it on ``held_out`` of them, save it.

    Each training product is seen as shot and in ``shopper_views`` shopper-like re-stagings (composited on
    generated textures, and on the room photos in ``backgrounds`` when given): the logistic regression then
    leans on the features that survive a change of scene, not on those the studio's white background
    happens to excite. The threshold is calibrated on the held-out products re-staged (as shot without
    views), since the router routes photos, not studio shots. ``c`` defaults to ``DEFAULT_C[features]``.

    16,000 products route 0.52 of the dev photos right against 0.48 for 8,000, in 10 minutes on 2 cores; the
    whole fashion catalogue (25 minutes) also 0.52, though its re-staged held-out accuracy still rose.

    The random sample is topped up so that every category gets ``per_category`` products (or all it has):
    8,000 of 44,000 fashion products hold one or two of its 8 blazers. Categories with fewer than
    ``min_count`` products in the catalogue are left out: the router never routes to them, and a photo of one
    is searched among its best guesses or globally.
    """
    from lookalike.catalogue import resolve_image_path
    from lookalike.store.sql import Store
    from lookalike.workspace import Workspace

    _check_features(features)
    ws = Workspace(workspace)
    if not ws.build_json.exists():
        raise FileNotFoundError(f"{ws.root} is not a built workspace: run `lookalike build` first")
    store = Store.for_workspace(ws.root, store_url)
    root = Path(ws.read(ws.catalogue_json).get("root", ws.root))
    rows = [p for p in store.iter_products() if p.image and p.category]
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in _sample(rows, sample, min_count, per_category, rng)]
    counts = Counter(p.category for p in rows)
    rows = [p for p in rows if counts[p.category] >= min_count]
    if len({p.category for p in rows}) < 2:
        raise ValueError(f"the sample has fewer than 2 categories with >= {min_count} products: nothing to route")
    c = DEFAULT_C[features] if c is None else c
    kwargs = {"image_size": image_size, **encoder_kwargs}
    enc = create_encoder(encoder, **kwargs)
    if not getattr(enc, "has_trained_head", False):
        log.warning("%s has no pretrained weights (head included): the router reads untrained features", encoder)
    paths = [resolve_image_path(ws.root, root, p.image) for p in rows]  # type: ignore[arg-type]
    restage = Restager(backgrounds, seed) if shopper_views else None
    shots, views, bad = shopper_inputs(enc, paths, features, shopper_views, restage, show_progress=show_progress)
    skipped = {pos for pos, _ in bad}
    kept = [i for i in range(len(rows)) if i not in skipped]
    labels = [str(rows[i].category) for i in kept]
    test = rng.random(len(labels)) < held_out
    train = ~test
    y_train = [x for x, t in zip(labels, train) if t]
    x_train = np.concatenate([shots[train], *(v[train] for v in views)])
    classes, coef, intercept = fit_logistic(x_train, y_train * (1 + shopper_views), c, features == "pooled")
    held = [x for x, t in zip(labels, test) if t]
    query = views[0][test] if shopper_views else shots[test]
    router = CategoryRouter(encoder, kwargs, classes, coef, intercept, 0.5, features, _encoder=enc)
    # the router's own inputs stand in for the search vectors: the workspace's, when its encoder was trained on
    # the catalogue, have seen these products and flatter searching within several types (0.8 that way on the
    # fashion catalogue, where the trained model's own calibration, on products it never saw, gave 0.15)
    calib = calibrate_routing(l2_normalise(shots[train]), y_train, l2_normalise(query), router.scores(query), held,
                              None, classes)
    router.route_threshold = float(calib["threshold"])

    def accuracy(x: np.ndarray) -> float:
        return float(np.mean([p[0][0] == y for p, y in zip(router.predict_inputs(x, top=1), held)]))

    router.info = {"products": len(labels), "skipped_images": len(bad), "categories": len(classes),
                   "held_out": len(held), "held_out_accuracy": accuracy(shots[test]),
                   "calibrated_on": "re-staged held-out products" if shopper_views else "held-out studio shots",
                   "held_out_accuracy_restaged": accuracy(views[0][test]) if shopper_views else None,
                   "shopper_views": shopper_views, "backgrounds": str(backgrounds) if backgrounds else None,
                   "calibration": {k: v for k, v in calib.items() if k != "curve"}, "c": c, "seed": seed,
                   "weights": getattr(enc, "weights_source", None)}
    if bad:
        log.warning("router: %d of %d images could not be read and were skipped", len(bad), len(rows))
    router.save(ws.models_dir(ROUTER_DIR))
    log.info("router fitted on %d products, %d categories: held-out accuracy %.3f, threshold %.2f",
             len(labels), len(classes), router.info["held_out_accuracy"], router.route_threshold)
    return router


def load_router(workspace: Path) -> CategoryRouter | None:
    """The workspace's router, or None when ``fit-router`` was never run there."""
    from lookalike.workspace import Workspace

    folder = Workspace(workspace).models_dir(ROUTER_DIR)
    return CategoryRouter.load(folder) if (folder / MODEL_JSON).is_file() else None
