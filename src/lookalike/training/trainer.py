"""``train()``: catalogue or workspace in, a model folder out (``<ws>/models/<name>/``) that the
``trained:`` encoder loads. ``lookalike train`` wraps it one to one.

The folder holds ``checkpoint.pt`` (resume state), ``model.pt`` (weights), ``training.json`` (config,
preprocessing, label map, per-epoch metrics, timings), ``report.json``, ``curves.png`` and ``model.onnx``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.encoders.prep import PreprocessCfg
from lookalike.encoders.trained import check_tta
from lookalike.io_utils import write_json
from lookalike.training import data as D
from lookalike.training.augment import AugmentCfg
from lookalike.training.features import Views, cached_features
from lookalike.training.loop import LoopCfg, LoopState, OwnLoad, fit, pick_threads
from lookalike.training.models import SCRATCH, build_model, make_spec, weights_source
from lookalike.training.recipes import (
    RECIPES,
    AutoencoderRecipe,
    ClassifierRecipe,
    ContrastiveRecipe,
    FrozenClassifierRecipe,
)
from lookalike.training.report import embed_all, plot_curves, quality_report
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)

TRAINING_JSON = "training.json"
REPORT_JSON = "report.json"
# per recipe: epochs, image size (long side), learning rate, embedding size
DEFAULTS: dict[str, dict[str, Any]] = {
    "classifier": {"epochs": 30, "image_size": 64, "lr": 3e-3, "embed_dim": 128},
    "autoencoder": {"epochs": 20, "image_size": 64, "lr": 2e-3, "embed_dim": 256},
    "contrastive": {"epochs": 30, "image_size": 64, "lr": 2e-3, "embed_dim": 128},
}
PRETRAINED_DEFAULTS = {"image_size": 128, "lr": 2e-3}


@dataclass
class TrainResult:
    name: str
    model_dir: Path
    encoder: str  # the registry name that loads this model: "trained:<model_dir>"
    recipe: str
    epochs: int  # epochs completed
    resumed_from: int  # epochs already done when this call started
    seconds: float  # training time (all runs) + data preparation of this run
    history: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    recipe: str
    label: str | None
    backbone: str
    epochs: int
    image_size: tuple[int, int]  # (height, width)
    batch_size: int
    lr: float
    min_count: int
    freeze: bool
    seed: int
    limit: int | None
    embed_dim: int
    scale: float = 20.0  # cosine-softmax scale
    margin: float = 0.2  # CosFace margin
    label_smoothing: float = 0.1
    weight_decay: float = 5e-4
    val_frac: float = 0.1
    temperature: float = 0.2  # NT-Xent
    augment: dict[str, Any] = field(default_factory=dict)
    feature_mirror: bool = True  # frozen backbone: also cache each photo's mirror image (2x the feature time)
    neck_hidden: int = 0  # > 0: a hidden layer of that width before the embedding (helps on frozen features)
    domain_views: int = 0  # frozen backbone: also cache this many shopper-like views per photo (training/domain.py)
    domain: dict[str, Any] = field(default_factory=dict)  # the DomainCfg of those views
    backgrounds: str | None = None  # folder of room photos composited behind products in those views
    tune_from: int = 0  # > 0: cache the output of the backbone's first blocks, train the blocks from this one on

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _data_workspace(source: Path, workspace: Path, limit: int | None, show_progress: bool) -> Path:
    """The workspace holding the products: ``source`` itself, or ``workspace`` after ingesting ``source``
    (skipped when ``workspace`` already holds that catalogue)."""
    source = Path(source)
    if (source / "lookalike.db").exists():
        return source
    ws = Workspace(workspace)
    info = ws.read(ws.catalogue_json)
    if (ws.root / "lookalike.db").exists() and str(source.resolve()) in (info.get("path"), info.get("source")):
        log.info("%s already holds %s: not ingesting again", ws.root, source)
        return ws.root
    from lookalike.catalogue import ingest

    ingest(source, ws.root, limit=limit, show_progress=show_progress)
    return ws.root


def image_shape(paths: list[Path], long_side: int, probe: int = 200) -> tuple[int, int]:
    """(H, W) with the catalogue's median aspect ratio, the long side ``long_side``, both multiples of 8,
    so thumbnails train without padding (60x80 photos -> 64x48)."""
    from PIL import Image

    ratios = []
    for p in paths[:probe]:
        try:
            with Image.open(p) as im:
                ratios.append(im.width / im.height)
        except Exception as e:  # noqa: BLE001 - a bad image is skipped here and reported by the decoder
            log.debug("aspect probe skipped %s: %s", p, e)
    r = float(np.median(ratios)) if ratios else 1.0
    short = max(16, round(long_side * min(r, 1 / r) / 8) * 8)
    return (long_side, short) if r <= 1 else (short, long_side)


def train(source: Path, workspace: Path, label: str | None = "articleType", recipe: str | None = None,
          backbone: str | None = None, epochs: int | None = None, image_size: int | None = None,
          batch_size: int = 128, lr: float | None = None, min_count: int = 20, freeze: bool | None = None,
          seed: int = 0, resume: bool = True, show_progress: bool = True, limit: int | None = None,
          name: str | None = None, feature_mirror: bool = True, neck_hidden: int = 0, domain_views: int = 0,
          domain: dict[str, Any] | None = None, backgrounds: Path | str | None = None,
          tune_from: int = 0, tta: str = "none") -> TrainResult:
    """Train an encoder on a catalogue's own photos; see the module docstring for what lands where.

    ``label``: the category (``"category"`` or its source column, e.g. ``articleType``) or an attribute.
    ``recipe``: ``classifier`` (default when the label has >= 2 classes), ``autoencoder``, ``contrastive``
    (default without labels). ``backbone``: ``scratch`` (default) or ``timm:<name>`` with pretrained weights
    resolved offline; ``freeze`` (default True for pretrained backbones) trains only the layers above it,
    from features computed once (``feature_mirror``: also of each mirrored photo, as augmentation).
    ``domain_views``: with a frozen backbone, also cache that many shopper-like re-stagings of every photo
    (``training/domain.py``; ``domain`` overrides DomainCfg fields, ``backgrounds`` is a folder of room photos
    to composite on), so the layers above learn to place phone photos where the studio shots are.
    ``tune_from`` = k: with a pretrained backbone, cache the output of its first k blocks instead and train
    the blocks from k on as well (at a tenth of ``lr``), so the late blocks adapt at the cost of the late
    blocks' forward and backward passes only.
    ``tta="mirror"``: the model encodes every photo with its mirror image (twice the inference cost); the
    report measures it that way and the ``trained:`` encoder reads the setting from ``training.json``.
    Re-running a finished model with another ``tta`` only re-measures it.
    """
    check_tta(tta)
    ceiling = torch.get_num_threads()
    torch.set_num_threads(pick_threads(0, ceiling))
    try:
        return _train(Path(source), Workspace(workspace), label, recipe, backbone, epochs, image_size, batch_size,
                      lr, min_count, freeze, seed, resume, show_progress, limit, name, ceiling, feature_mirror,
                      neck_hidden, domain_views, domain or {}, str(backgrounds) if backgrounds else None,
                      tune_from, tta)
    finally:
        torch.set_num_threads(ceiling)


def _train(source: Path, out_ws: Workspace, label: str | None, recipe: str | None, backbone: str | None,
           epochs: int | None, image_size: int | None, batch_size: int, lr: float | None, min_count: int,
           freeze: bool | None, seed: int, resume: bool, show_progress: bool, limit: int | None,
           name: str | None, max_threads: int, feature_mirror: bool = True, neck_hidden: int = 0,
           domain_views: int = 0, domain: dict[str, Any] | None = None, backgrounds: str | None = None,
           tune_from: int = 0, tta: str = "none") -> TrainResult:
    t_start = time.perf_counter()
    own_load = OwnLoad()
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    data_ws = _data_workspace(source, out_ws.root, limit, show_progress)
    rows = D.read_products(data_ws, limit)
    if not rows:
        raise ValueError(f"no products in {data_ws}: nothing to train on")
    cat_col = D.category_column(data_ws)
    raw = [D.label_of(r, label, cat_col) for r in rows] if label else [None] * len(rows)
    if recipe is None:
        try:
            D.LabelMap.build(raw, min_count) if label else None
            recipe = "classifier" if label else "contrastive"
        except ValueError as e:
            log.info("no usable label (%s): training the contrastive recipe", e)
            recipe = "contrastive"
    defaults = DEFAULTS[recipe]
    backbone = backbone or SCRATCH
    pretrained = backbone != SCRATCH and recipe != "autoencoder"
    if recipe == "autoencoder" and backbone != SCRATCH:
        raise ValueError("the autoencoder recipe trains its own convolutional encoder: drop --backbone")
    freeze = bool(pretrained if freeze is None else freeze) and pretrained
    if freeze and recipe != "classifier":
        raise ValueError("freeze=True needs the classifier recipe (nothing else would train)")
    if freeze and tta == "mirror" and not feature_mirror:
        raise ValueError("mirror TTA on a frozen backbone is measured on its cached mirror views: "
                         "train with --mirror-features")
    long_side = image_size or (PRETRAINED_DEFAULTS["image_size"] if pretrained else defaults["image_size"])
    from lookalike.catalogue import image_resolver

    resolve = image_resolver(data_ws)
    shape = image_shape([resolve(r.image) for r in rows[:200] if r.image and not r.image.startswith("http")],
                        long_side)
    aug = AugmentCfg.strong() if recipe == "contrastive" else AugmentCfg.light()
    if recipe == "autoencoder":
        aug = AugmentCfg(zoom=(0.95, 1.05), shift=0.03, brightness=0.0, contrast=0.0, saturation=0.0)
    cfg = TrainConfig(recipe=recipe, label=label, backbone=backbone, epochs=epochs or defaults["epochs"],
                      image_size=shape, batch_size=batch_size,
                      lr=lr or (PRETRAINED_DEFAULTS["lr"] if pretrained else defaults["lr"]), min_count=min_count,
                      freeze=freeze, seed=seed, limit=limit, embed_dim=defaults["embed_dim"], augment=aug.to_dict(),
                      feature_mirror=feature_mirror, neck_hidden=neck_hidden, domain_views=domain_views,
                      domain=_domain_dict(domain) if domain_views else {}, backgrounds=backgrounds,
                      tune_from=tune_from)
    if (domain_views or tune_from) and not freeze:
        raise ValueError("domain_views and tune_from need a frozen pretrained backbone: give --backbone "
                         "timm:<name> (and not --fine-tune)")
    name = name or (f"{recipe}-{label}" if label and recipe == "classifier" else recipe)
    folder = out_ws.models_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    if not resume:
        for f in ("checkpoint.pt", "model.pt", "model.onnx", TRAINING_JSON, REPORT_JSON, "curves.png", D.HELDOUT_JSON):
            (folder / f).unlink(missing_ok=True)

    # ---- data -----------------------------------------------------------------------------------------
    # timm backbones take the ImageNet mean/std they were trained with; from scratch anything works
    pre = PreprocessCfg(size=shape, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
                        resize="pad")
    t0 = time.perf_counter()
    images = D.load_images(data_ws, out_ws.root, rows, pre, show_progress)
    if len(images.ids) < 4:
        raise ValueError(f"only {len(images.ids)} decodable images in {data_ws}: too few to train")
    raw = [D.label_of(r, label, cat_col) for r in images.rows] if label else [None] * len(images.ids)
    labels = D.LabelMap.build(raw, min_count) if recipe == "classifier" else None
    val_mask = D.split_validation(images.ids, images.hashes, cfg.val_frac, seed)
    codes = {x: i for i, x in enumerate(sorted({x for x in raw if x is not None}))}
    eval_labels = np.asarray([codes[x] if x is not None else -1 for x in raw]) if codes else None
    targets = labels.encode(raw) if labels else None
    train_idx = np.flatnonzero(~val_mask & (targets >= 0 if targets is not None else True))
    val_idx = np.flatnonzero(val_mask)
    data_seconds = time.perf_counter() - t0
    # `lookalike evaluate` samples its queries from these, never from products the model trained on
    write_json(folder / D.HELDOUT_JSON, {"ids": [images.ids[i] for i in val_idx]})

    # ---- model and recipe --------------------------------------------------------------------------------
    torch.manual_seed(seed)
    spec = make_spec(recipe, backbone, shape, cfg.embed_dim, len(labels.classes) if labels else 0,
                     cfg.scale, cfg.margin, {"neck_hidden": neck_hidden} if neck_hidden else None)
    model = build_model(spec, pretrained=pretrained, workspace=out_ws.root)
    src = weights_source(model)
    if pretrained:
        bb_cfg = model.backbone.body.pretrained_cfg
        pre = PreprocessCfg(size=shape, mean=tuple(bb_cfg.get("mean", pre.mean)), std=tuple(bb_cfg.get("std", pre.std)),
                            interpolation="bilinear", resize="pad")
    features = None
    domain_from = 1 + int(cfg.feature_mirror) if cfg.domain_views else None  # the first shopper-like view
    if recipe == "classifier" and freeze:
        t1 = time.perf_counter()
        views = Views(cfg.feature_mirror, cfg.domain_views, cfg.tune_from, cfg.domain, cfg.backgrounds, seed)
        features = cached_features(out_ws, model, images, pre, backbone, src, views, show_progress)
        data_seconds += time.perf_counter() - t1
        rec: Any = FrozenClassifierRecipe(model, features, pre, val_idx, eval_labels, targets, cfg.label_smoothing,
                                          domain_from=domain_from, tune_from=cfg.tune_from, late_lr=cfg.lr * 0.1)
    elif recipe == "classifier":
        rec = ClassifierRecipe(model, images.pixels, pre, val_idx, aug, eval_labels, targets, cfg.label_smoothing)
    elif recipe == "autoencoder":
        rec = AutoencoderRecipe(model, images.pixels, pre, val_idx, aug, eval_labels)
    else:
        rec = ContrastiveRecipe(model, images.pixels, pre, val_idx, aug, eval_labels, temperature=cfg.temperature)

    meta: dict[str, Any] = {
        "name": name, "recipe": recipe, "status": "running", "created_at": _now(), "config": asdict(cfg),
        "fingerprint": cfg.fingerprint(), "model": spec, "preprocess": pre.to_dict(), "label": label,
        "labels": labels.to_dict() if labels else None, "weights_source": src, "tta": tta,
        "data": {"workspace": str(data_ws), "n_products": len(rows), "n_images": len(images.ids),
                 "skipped_images": len(images.errors), "n_train": len(train_idx), "n_val": len(val_idx)},
        "versions": {"torch": torch.__version__},
    }
    old = out_ws.read(folder / TRAINING_JSON)
    if resume and old.get("fingerprint") == meta["fingerprint"]:
        meta["created_at"] = old.get("created_at", meta["created_at"])

    def on_epoch(state: LoopState) -> None:
        meta["epochs"] = state.history
        meta["timings"] = {"train_seconds": round(state.seconds, 1)}
        write_json(folder / TRAINING_JSON, meta)

    loop = LoopCfg(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, seed)
    state = fit(rec, train_idx, loop, folder, meta["fingerprint"], on_epoch, resume, show_progress, max_threads,
                own_load)

    # ---- report ------------------------------------------------------------------------------------------
    t2 = time.perf_counter()
    emb, logits = embed_all(model, images.pixels, pre, features=features,
                            above=rec.above if features is not None else None, tta=tta,
                            mirror_view=1 if cfg.feature_mirror else None)
    report = quality_report(emb, logits, raw, targets, labels.classes if labels else None, val_mask)
    report["embed_seconds"] = round(time.perf_counter() - t2 - report["report_seconds"], 1)
    report["train_seconds"] = round(state.seconds, 1)
    report["data_seconds"] = round(data_seconds, 1)
    report["epochs"] = state.epoch
    report["recipe"], report["backbone"], report["weights_source"], report["tta"] = recipe, backbone, src, tta
    if labels is not None and label in (D.CATEGORY, cat_col):
        # the model predicts the products' category: photo search routes on it, so calibrate that here
        report["routing"] = _calibrate(model, emb, logits, raw, val_mask, labels.classes, features, domain_from,
                                       seed, rec.above if features is not None else None)
        meta["routing"] = {k: report["routing"][k] for k in ("threshold", "top_types", "queries_are")}
    write_json(folder / REPORT_JSON, report)
    plot_curves(state.history, folder / "curves.png", f"{name} ({recipe}, {backbone})")
    meta.update(status="done", finished_at=_now(), epochs=state.history, report=report,
                timings={"data_seconds": round(data_seconds, 1), "train_seconds": round(state.seconds, 1),
                         "report_seconds": round(time.perf_counter() - t2, 1),
                         "total_seconds_this_run": round(time.perf_counter() - t_start, 1)})
    write_json(folder / TRAINING_JSON, meta)
    try:
        from lookalike.training.export import export_onnx

        export_onnx(folder)
    except Exception as e:  # noqa: BLE001 - the torch model works without its ONNX copy
        log.warning("ONNX export of %s failed (the torch backend still works): %s", folder, e)
    log.info("trained %s in %.0f s: %s", name, state.seconds,
             {k: report.get(k) for k in ("val_top1", "val_top1_top20", "p_at_10")})
    return TrainResult(name, folder, f"trained:{folder}", recipe, state.epoch, state.resumed_from,
                       round(state.seconds + data_seconds, 1), state.history, report)


def _calibrate(model: torch.nn.Module, emb: np.ndarray, logits: np.ndarray, raw: list[str | None],
               val_mask: np.ndarray, classes: list[str], features: np.ndarray | None, domain_from: int | None,
               seed: int, above: Callable[[torch.Tensor], torch.Tensor] | None = None,
               max_queries: int = 2000) -> dict[str, Any]:
    """``training.routing.calibrate_routing`` on (a sample of) the held-out products: re-staged as phone
    photos when such views were cached, else their studio photos."""
    import torch.nn.functional as F

    from lookalike.training.routing import calibrate_routing

    val = np.flatnonzero(val_mask & np.asarray([x is not None for x in raw]))
    if len(val) > max_queries:
        val = np.sort(np.random.default_rng(seed).choice(val, max_queries, replace=False))
    if features is not None and domain_from is not None:
        with torch.no_grad():
            e = (above or model.neck)(torch.from_numpy(np.asarray(features[val, domain_from])).float())
            q_emb, q_logits = F.normalize(e, dim=1).numpy(), model.head(e).float().numpy()
        source = "held-out products re-staged as phone photos"
    else:
        q_emb, q_logits, source = emb[val], logits[val], "held-out studio photos"
    out = calibrate_routing(emb, raw, q_emb, q_logits, [str(raw[i]) for i in val], val, classes)
    return {**out, "queries_are": source}


def _domain_dict(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Every DomainCfg field, defaults overridden by ``overrides`` (unknown names are an error)."""
    from lookalike.training.domain import DomainCfg

    base = DomainCfg().to_dict()
    unknown = set(overrides or {}) - set(base)
    if unknown:
        raise ValueError(f"unknown domain settings {sorted(unknown)}; valid: {', '.join(sorted(base))}")
    return json.loads(json.dumps(DomainCfg.from_dict({**base, **(overrides or {})}).to_dict()))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
