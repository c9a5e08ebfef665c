"""``gram``: a style descriptor in the manner of Pair (Gatys-style Gram matrices of CNN feature maps).

Per chosen backbone stage: project the channels onto a fixed random orthonormal basis (so a Gram matrix
stays small whatever the stage width), take the Gram matrix of the feature map, keep its upper triangle,
signed square root and L2. The stages are concatenated and reduced by a PCA fitted on the catalogue, which
is why this encoder ``needs_fit``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.encoders import ENCODERS
from lookalike.encoders.base import Encoder
from lookalike.encoders.prep import ImageLike, PreprocessCfg, normalise_batch
from lookalike.encoders.timm_clip import timm_preprocess
from lookalike.encoders.weights import load_backbone
from lookalike.io_utils import atomic_write, read_json

log = logging.getLogger(__name__)

STATE_NPZ = "gram.npz"
STATE_JSON = "gram.json"


class GramEncoder(Encoder):
    """Gram matrices of 2-3 backbone stages -> PCA(dim)."""

    needs_fit = True

    def __init__(self, backbone: str = "tf_efficientnet_lite0", pretrained: bool = True, dim: int = 256,
                 image_size: int = 224, out_indices: Sequence[int] = (1, 2, 3), channels: int = 32,
                 checkpoint: str | Path | None = None, cache_dir: Path | None = None,
                 workspace: Path | None = None, device: str = "cpu", max_fit_images: int = 4096,
                 seed: int = 0) -> None:
        if dim < 1 or channels < 1:
            raise ValueError("dim and channels must be >= 1")
        model, self.weights_source = load_backbone(backbone, pretrained, checkpoint, cache_dir, workspace,
                                                   num_classes=0)
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(f"gram needs a timm backbone with forward_intermediates(); {backbone!r} has none")
        n_stages = len(model.feature_info)
        self.out_indices = tuple(int(i) for i in out_indices)
        if not self.out_indices or any(not 0 <= i < n_stages for i in self.out_indices):
            raise ValueError(f"out_indices must be within 0..{n_stages - 1} for {backbone}, got {out_indices}")
        stage_chs = [int(model.feature_info[i]["num_chs"]) for i in self.out_indices]
        # the later blocks and the head are never used: drop them so the forward pass stops early
        model.prune_intermediate_layers(list(self.out_indices), prune_head=True)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backbone, self.pretrained, self.channels, self.seed = backbone, pretrained, channels, seed
        self.requested_dim = dim
        self.dim = dim
        self.image_size = image_size
        self.max_fit_images = max_fit_images
        self.name = "gram"
        # whole product on white, as Pair's product shots: pad, never crop
        self.preprocess: PreprocessCfg = timm_preprocess(model, image_size, resize="pad")
        rng = np.random.default_rng(seed)
        self.projections = [self._orthonormal(rng, c, channels) for c in stage_chs]
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None  # (dim, raw_dim)
        self.n_fit = 0
        self._raw_mode = False

    @staticmethod
    def _orthonormal(rng: np.random.Generator, c: int, k: int) -> np.ndarray | None:
        if c <= k:
            return None
        q, _ = np.linalg.qr(rng.standard_normal((c, k)))
        return q.astype(np.float32)

    @property
    def raw_dim(self) -> int:
        sizes = [self.channels if p is not None else None for p in self.projections]
        chs = [s if s is not None else int(self.model.feature_info[i]["num_chs"])
               for s, i in zip(sizes, self.out_indices)]
        return sum(c * (c + 1) // 2 for c in chs)

    @property
    def fitted(self) -> bool:
        return self.pca_components is not None

    # ---- descriptors ---------------------------------------------------------------------------------
    def descriptors(self, batch: np.ndarray) -> np.ndarray:
        """Stacked uint8 images -> the raw (pre-PCA) Gram descriptors, float32 (B, raw_dim)."""
        x = torch.from_numpy(normalise_batch(batch, self.preprocess)).to(self.device)
        parts = []
        with torch.inference_mode():
            feats = self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
            for f, proj in zip(feats, self.projections):
                f = f.float().flatten(2)  # (B, C, HW)
                if proj is not None:
                    f = torch.einsum("bcn,ck->bkn", f, torch.from_numpy(proj).to(f.device))
                g = f @ f.transpose(1, 2) / f.shape[2]
                iu = torch.triu_indices(g.shape[1], g.shape[2], device=g.device)
                v = g[:, iu[0], iu[1]]
                # signed sqrt tames the few huge channel products; per-stage L2 weighs the stages equally
                v = torch.sign(v) * torch.sqrt(v.abs())
                parts.append(torch.nn.functional.normalize(v, dim=1))
        return torch.cat(parts, dim=1).cpu().numpy()

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        raw = self.descriptors(batch)
        if self._raw_mode:
            return raw
        if self.pca_components is None or self.pca_mean is None:
            raise RuntimeError("the gram encoder is not fitted: call fit(catalogue_images) first, or "
                               "load_state(folder) to restore a saved fit")
        return (raw - self.pca_mean) @ self.pca_components.T

    # ---- fitting ---------------------------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike], show_progress: bool = True) -> None:
        """PCA on the Gram descriptors of (a seeded sample of at most ``max_fit_images``) catalogue images."""
        n = len(images)
        if n > self.max_fit_images:
            pick = np.sort(np.random.default_rng(self.seed).choice(n, self.max_fit_images, replace=False))
            images = [images[int(i)] for i in pick]
        rows, bad = [], 0
        self._raw_mode = True
        try:
            for b in self.encode_iter(images, batch_size=32, show_progress=show_progress):
                rows.append(b.vectors)
                bad += len(b.errors)
        finally:
            self._raw_mode = False
        x = np.concatenate(rows).astype(np.float64) if rows else np.empty((0, self.raw_dim))
        if bad:
            log.warning("gram fit: %d of %d images could not be decoded and were skipped", bad, len(images))
        if len(x) < 2:
            raise ValueError(f"gram fit needs at least 2 decodable images, got {len(x)}")
        mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        k = min(self.requested_dim, len(x) - 1, x.shape[1])
        if k < self.requested_dim:
            log.warning("gram: only %d components from %d images (dim=%d asked)", k, len(x), self.requested_dim)
        self.pca_mean = mean.astype(np.float32)
        self.pca_components = vt[:k].astype(np.float32)
        self.dim = k
        self.n_fit = len(x)
        explained = float((s[:k] ** 2).sum() / max((s ** 2).sum(), 1e-12))
        log.info("gram PCA fitted on %d images: %d -> %d dims, %.1f%% variance kept", len(x), x.shape[1], k,
                 100 * explained)

    def _config(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "weights": self.weights_source or "random",
                "out_indices": list(self.out_indices), "channels": self.channels,
                "image_size": self.image_size, "seed": self.seed}

    def save_state(self, folder: Path) -> None:
        if self.pca_components is None or self.pca_mean is None:
            raise RuntimeError("nothing to save: the gram encoder is not fitted")
        folder = Path(folder)
        arrays: dict[str, np.ndarray] = {"mean": self.pca_mean, "components": self.pca_components}
        for i, p in enumerate(self.projections):
            if p is not None:
                arrays[f"projection_{i}"] = p

        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
                np.savez(f, **arrays)

        atomic_write(folder / STATE_NPZ, write_npz)
        meta = {**self._config(), "dim": self.dim, "n_fit": self.n_fit, "raw_dim": self.raw_dim}
        atomic_write(folder / STATE_JSON, lambda p: p.write_text(json.dumps(meta, indent=2)))

    def load_state(self, folder: Path) -> None:
        folder = Path(folder)
        if not (folder / STATE_NPZ).is_file() or not (folder / STATE_JSON).is_file():
            raise FileNotFoundError(f"no saved gram state in {folder} (expected {STATE_NPZ} and {STATE_JSON})")
        meta = read_json(folder / STATE_JSON)
        mine = self._config()
        diff = {k: (meta.get(k), v) for k, v in mine.items() if k != "seed" and meta.get(k) != v}
        if diff:
            raise ValueError(f"saved gram state in {folder} was fitted with other settings (saved, now): {diff}")
        with np.load(folder / STATE_NPZ) as z:
            self.pca_mean = z["mean"].astype(np.float32)
            self.pca_components = z["components"].astype(np.float32)
            self.projections = [z.get(f"projection_{i}") for i in range(len(self.projections))]
        if self.pca_components.shape[1] != self.raw_dim:
            raise ValueError(f"saved gram PCA expects {self.pca_components.shape[1]} inputs, this encoder "
                             f"makes {self.raw_dim}")
        self.dim = int(self.pca_components.shape[0])
        self.n_fit = int(meta.get("n_fit", 0))

    def info(self) -> dict[str, Any]:
        return {**super().info(), **self._config(), "fitted": self.fitted, "n_fit": self.n_fit,
                "raw_dim": self.raw_dim}

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), **self._config()}


@ENCODERS.register("gram", help="style: Gram matrices of CNN feature maps + PCA fitted on the catalogue (Pair)")
def _gram(**kwargs: Any) -> GramEncoder:
    return GramEncoder(**kwargs)
