"""Frozen-backbone inputs, computed once and cached in ``<ws>/cache/``: the pooled features of a frozen
pretrained backbone (or the output of its first blocks, when the later ones are fine-tuned), for each view of
each photo: the photo, its mirror image and shopper-like re-stagings (training/domain.py). Another head on the
same inputs, or a re-run, then trains from RAM in seconds per epoch.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.encoders.prep import PreprocessCfg
from lookalike.io_utils import atomic_write, save_npy, write_json
from lookalike.training import data as D
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class Views:
    """Which views of each photo the frozen features hold: the photo, its mirror image, shopper-like views."""

    mirror: bool = True
    domain: int = 0
    at: int = 0  # > 0: the output of the first ``at`` blocks (maps), else the pooled features
    domain_cfg: dict[str, Any] = field(default_factory=dict)
    backgrounds: str | None = None
    seed: int = 0

    @property
    def count(self) -> int:
        return 1 + int(self.mirror) + self.domain

    def key(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "at" or v}  # caches from before ``at`` stay valid

    def slug(self) -> str:
        base = ("mirror" if self.mirror else "plain") + (f"-early{self.at}" if self.at else "")
        if not self.domain:
            return base
        digest = hashlib.sha256(json.dumps([self.domain_cfg, self.backgrounds, self.seed], sort_keys=True)
                                .encode()).hexdigest()[:8]
        return f"{base}-shopper{self.domain}-{digest}"


def background_bank(folder: str | None) -> torch.Tensor | None:
    """Room photos to composite products on: the IKEA dataset's room scenes, or every image in ``folder``."""
    if not folder:
        return None
    from lookalike.training.domain import ikea_room_paths, load_background_bank

    root = Path(folder)
    paths = ikea_room_paths(root) if (root / "images" / "room_scenes").is_dir() else sorted(
        p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not paths:
        raise ValueError(f"no background images in {root}")
    return load_background_bank(paths)


def _frozen_forward(bb: torch.nn.Module, size: tuple[int, int], folder: Path) -> Callable[[torch.Tensor], np.ndarray]:
    """The frozen part as a function of a normalised batch: onnxruntime when it exports (2.5x torch on
    EfficientNet-Lite0 at 96x72: 0.46 against 1.16 s per 128 photos), else torch."""
    from lookalike.encoders.onnx_runtime import cached_session
    from lookalike.training.loop import fast_bf16

    try:
        sess, _ = cached_session(bb, "frozen", size, folder)
        return lambda x: sess.run(None, {"images": x.contiguous().numpy()})[0]
    except Exception as e:  # noqa: BLE001 - torch computes the same features, only slower
        log.warning("frozen backbone on torch (no onnxruntime session: %s)", e)

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16()):
            return bb(x).float().numpy()

    return run


def _backbone_features(model: torch.nn.Module, pixels: np.ndarray, pre: PreprocessCfg, show_progress: bool,
                       views: Views, folder: Path, batch: int = 128) -> np.ndarray:
    """The frozen part's output for every photo, then (``views``) for its mirror image and for shopper-like
    re-stagings of it (deterministic per seed): (n, views.count, F) pooled features, or (n, views.count, C,
    h, w) maps of the first ``views.at`` blocks; float16."""
    from tqdm.auto import tqdm

    from lookalike.training.augment import normalise, to_float
    from lookalike.training.domain import DomainCfg, ShopperAugment
    from lookalike.training.models import EarlyBlocks

    bb = model.backbone.eval()
    frozen = EarlyBlocks(bb, views.at).eval() if views.at else bb
    forward = _frozen_forward(frozen, pre.size, folder)
    shopper = ShopperAugment(DomainCfg.from_dict(views.domain_cfg), background_bank(views.backgrounds)) \
        if views.domain else None
    with torch.no_grad():
        h, w = pre.size
        shape = forward(torch.zeros(2, 3, h, w)).shape[1:]
    out = np.zeros((len(pixels), views.count, *shape), np.float16)
    with torch.no_grad():
        for s in tqdm(range(0, len(pixels), batch), desc="backbone features", disable=not show_progress):
            raw = torch.from_numpy(pixels[s:s + batch])
            x = normalise(to_float(raw), pre)
            out[s:s + batch, 0] = forward(x)
            if views.mirror:
                out[s:s + batch, 1] = forward(torch.flip(x, dims=[3]))
            for v in range(views.domain):
                gen = torch.Generator().manual_seed(views.seed * 1_000_003 + v * 7919 + s)
                assert shopper is not None
                out[s:s + batch, 1 + int(views.mirror) + v] = forward(normalise(shopper(raw, gen), pre))
    return out


def cached_features(ws: Workspace, model: torch.nn.Module, images: D.Images, pre: PreprocessCfg, backbone: str,
                     source: str | None, views: Views, show_progress: bool) -> np.ndarray:
    """``_backbone_features``, kept in ``<ws>/cache/`` so that another head on the same frozen backbone (or a
    re-run) skips the slow part; reused only for the very same products, images, weights, preprocessing and
    views."""
    h, w = pre.size
    slug = backbone.replace(":", "-").replace("/", "-")
    path = ws.root / "cache" / f"features-{slug}-{h}x{w}-{views.slug()}.npy"
    # compared after a JSON round trip, as it is read back (tuples become lists)
    extra = {"views": views.key()} if views.domain or views.at else {}
    key = json.loads(json.dumps({"ids": images.ids, "hashes": images.hashes, "weights_source": source,
                                 "preprocess": pre.to_dict(), **extra}))
    if path.exists() and ws.read(path.with_suffix(".json")) == key:
        log.info("backbone features from %s", path)
        return np.load(path)
    out = _backbone_features(model, images.pixels, pre, show_progress, views, ws.root / "cache")
    atomic_write(path, lambda p: save_npy(p, out))
    write_json(path.with_suffix(".json"), key)
    return out
