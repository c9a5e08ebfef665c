"""The three recipes: what one training step and one validation pass mean for each.

- ``classifier``: CosFace (normalised softmax with an additive cosine margin) on the label.
- ``autoencoder``: ENFINT part 3, pixels -> dense bottleneck -> pixels, mean squared error.
- ``contrastive``: SimCLR, two augmented views of each photo, NT-Xent on a projection of the embedding.

Every recipe also reports ``val_p10`` when labels are known: precision@10 of the same label among the
validation products themselves, a cheap per-epoch stand-in for the full report's catalogue-wide P@10.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.encoders.prep import PreprocessCfg
from lookalike.training.augment import AugmentCfg, BatchAugment, normalise, to_float
from lookalike.training.models import ConvAutoencoder, EmbeddingNet

log = logging.getLogger(__name__)

RECIPES = ("classifier", "autoencoder", "contrastive")
EVAL_BATCH = 512


def precision_at_k(emb: torch.Tensor, labels: np.ndarray, k: int = 10, chunk: int = 1024) -> float:
    """Mean share of each row's k nearest other rows (cosine) sharing its label; rows with label < 0 skipped."""
    lab = torch.as_tensor(labels)
    keep = torch.nonzero(lab >= 0).flatten()
    if len(keep) <= k:
        return float("nan")
    e, lab = F.normalize(emb[keep].float(), dim=1), lab[keep]
    hits = 0.0
    for s in range(0, len(e), chunk):
        sims = e[s:s + chunk] @ e.t()
        sims[torch.arange(sims.shape[0]), torch.arange(s, s + sims.shape[0])] = -2.0  # not itself
        top = sims.topk(k, dim=1).indices
        hits += (lab[top] == lab[s:s + chunk, None]).float().mean(dim=1).sum().item()
    return hits / len(e)


class _Recipe:
    """Shared plumbing: pixels in RAM as a uint8 tensor, augmentation, batched clean forward passes."""

    model: nn.Module

    def __init__(self, model: nn.Module, pixels: np.ndarray, pre: PreprocessCfg, val_idx: np.ndarray,
                 aug: AugmentCfg, eval_labels: np.ndarray | None) -> None:
        self.model = model
        self.pixels = torch.from_numpy(pixels)
        self.pre = pre
        self.val_idx = val_idx
        self.aug = BatchAugment(aug)
        self.eval_labels = eval_labels  # raw-label ids per product (for val_p10), -1 unknown

    def parameters(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]

    def set_train(self) -> None:
        self.model.train()

    def inputs(self, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        return normalise(self.aug(self.pixels[idx], gen), self.pre)

    def clean(self, idx: np.ndarray) -> torch.Tensor:
        return normalise(to_float(self.pixels[idx]), self.pre)

    def embed(self, idx: np.ndarray) -> torch.Tensor:
        out = [self.model(self.clean(idx[s:s + EVAL_BATCH]))[0] for s in range(0, len(idx), EVAL_BATCH)]
        return torch.cat(out) if out else torch.zeros((0, 1))

    def _p10(self, emb: torch.Tensor) -> dict[str, float]:
        if self.eval_labels is None:
            return {}
        return {"val_p10": precision_at_k(emb, self.eval_labels[self.val_idx])}


class ClassifierRecipe(_Recipe):
    def __init__(self, model: EmbeddingNet, pixels: np.ndarray, pre: PreprocessCfg, val_idx: np.ndarray,
                 aug: AugmentCfg, eval_labels: np.ndarray | None, targets: np.ndarray,
                 label_smoothing: float = 0.1) -> None:
        super().__init__(model, pixels, pre, val_idx, aug, eval_labels)
        self.targets = torch.from_numpy(targets)
        self.label_smoothing = label_smoothing
        self.val_idx = val_idx[targets[val_idx] >= 0]

    def loss(self, emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        head = self.model.head
        # the head in float32: bfloat16 cosines are too coarse once multiplied by the scale
        with torch.autocast("cpu", enabled=False):
            cos = head.cosines(emb.float())
            return F.cross_entropy(head.margin_logits(cos, y), y, label_smoothing=self.label_smoothing)

    def train_step(self, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        return self.loss(self.model.embed(self.inputs(idx, gen)), self.targets[idx])

    def evaluate(self) -> dict[str, float]:
        embs, losses, correct = [], 0.0, 0
        for s in range(0, len(self.val_idx), EVAL_BATCH):
            idx = self.val_idx[s:s + EVAL_BATCH]
            e = self.model.embed(self.clean(idx)).float()
            y = self.targets[idx]
            losses += self.loss(e, y).item() * len(idx)
            correct += int((self.model.head(e).argmax(1) == y).sum())
            embs.append(F.normalize(e, dim=1))
        n = max(1, len(self.val_idx))
        return {"val_loss": losses / n, "val_acc": correct / n, **self._p10(torch.cat(embs))}


class FrozenClassifierRecipe(ClassifierRecipe):
    """The classifier on a pretrained backbone whose lower part is frozen and computed once per cached view
    (the photo, its mirror image, shopper-like re-stagings from ``domain_from`` on). With ``tune_from`` = 0 the
    whole backbone is frozen and the cache holds its pooled features: only the neck and the head train. With
    ``tune_from`` = k the cache holds the output of its first k blocks, and blocks k.. train too (at
    ``late_lr``), from RAM. Each step sees a random view of each photo."""

    def __init__(self, model: EmbeddingNet, features: np.ndarray, pre: PreprocessCfg, val_idx: np.ndarray,
                 eval_labels: np.ndarray | None, targets: np.ndarray, label_smoothing: float = 0.1,
                 domain_from: int | None = None, tune_from: int = 0, late_lr: float | None = None) -> None:
        super().__init__(model, np.zeros((0, 1, 1, 3), np.uint8), pre, val_idx, AugmentCfg.none(), eval_labels,
                         targets, label_smoothing)
        self.features = torch.from_numpy(features)  # (n, views, F) or (n, views, C, h, w)
        self.domain_from, self.tune_from, self.late_lr = domain_from, tune_from, late_lr
        bb = model.backbone
        self.frozen = bb.early_modules(tune_from) if tune_from else [bb]
        for m in self.frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def above(self, x: torch.Tensor) -> torch.Tensor:
        """Cached inputs -> the embedding (before normalisation)."""
        if self.tune_from:
            x = self.model.backbone.late(x, self.tune_from)
        return self.model.neck(x)

    def parameters(self) -> list[dict[str, Any]]:
        if not self.tune_from:
            return super().parameters()
        late = [p for p in self.model.backbone.parameters() if p.requires_grad]
        rest = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        return [{"params": late, **({"lr": self.late_lr} if self.late_lr else {})}, {"params": rest}]

    def set_train(self) -> None:
        self.model.train()
        for m in self.frozen:
            m.eval()  # frozen BatchNorm statistics too

    def train_step(self, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        view = torch.randint(0, self.features.shape[1], (len(idx),), generator=gen)
        x = self.features[torch.from_numpy(idx), view].float()
        return self.loss(self.above(x), self.targets[idx])

    def _scores(self, view: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        rows = torch.from_numpy(self.val_idx)
        e = torch.cat([self.above(self.features[rows[s:s + EVAL_BATCH], view].float()).float()
                       for s in range(0, len(rows), EVAL_BATCH)]) if len(rows) else torch.zeros((0, 1))
        y = self.targets[self.val_idx]
        acc = float((self.model.head(e).argmax(1) == y).float().mean()) if len(y) else float("nan")
        return e, y, acc

    def evaluate(self) -> dict[str, float]:
        e, y, acc = self._scores(0)
        out = {"val_loss": self.loss(e, y).item(), "val_acc": acc, **self._p10(F.normalize(e, dim=1))}
        if self.domain_from is not None:
            # held-out products re-staged as phone photos: the studio-to-shopper gap, without shopper photos
            out["val_acc_shopper_like"] = self._scores(self.domain_from)[2]
        return out


class AutoencoderRecipe(_Recipe):
    model: ConvAutoencoder

    def train_step(self, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        x01 = self.aug(self.pixels[idx], gen)
        _, rec = self.model.reconstruct(normalise(x01, self.pre))
        return F.mse_loss(rec.float(), x01)

    def evaluate(self) -> dict[str, float]:
        embs, err = [], 0.0
        for s in range(0, len(self.val_idx), EVAL_BATCH):
            idx = self.val_idx[s:s + EVAL_BATCH]
            x01 = to_float(self.pixels[idx])
            z, rec = self.model.reconstruct(normalise(x01, self.pre))
            err += F.mse_loss(rec.float(), x01, reduction="sum").item() / x01[0].numel()
            embs.append(F.normalize(z.float(), dim=1))
        n = max(1, len(self.val_idx))
        return {"val_loss": err / n, **self._p10(torch.cat(embs))}


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner out of the 2B - 1 other views of the batch."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sims = z @ z.t() / temperature
    n = z1.shape[0]
    sims.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sims, target)


class ContrastiveRecipe(_Recipe):
    model: EmbeddingNet

    def __init__(self, *args: Any, temperature: float = 0.2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.temperature = temperature

    def _loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z = self.model.proj(self.model.embed(torch.cat([x1, x2])))
        with torch.autocast("cpu", enabled=False):
            return nt_xent(*z.float().chunk(2), self.temperature)

    def train_step(self, idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        return self._loss(self.inputs(idx, gen), self.inputs(idx, gen))

    def evaluate(self) -> dict[str, float]:
        gen = torch.Generator().manual_seed(0)  # the same validation views every epoch
        losses, n = 0.0, 0
        for s in range(0, len(self.val_idx) - 1, EVAL_BATCH):
            idx = self.val_idx[s:s + EVAL_BATCH]
            if len(idx) < 2:
                break
            losses += self._loss(self.inputs(idx, gen), self.inputs(idx, gen)).item() * len(idx)
            n += len(idx)
        return {"val_loss": losses / max(1, n), **self._p10(self.embed(self.val_idx))}
