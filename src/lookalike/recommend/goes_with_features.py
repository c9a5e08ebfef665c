"""What goes-with recipes compare: visual blocks (Gram style per backbone stage, an HSV colour histogram)
and text tokens (title, attributes) of every item.

Cross-category matching cannot use a same-category embedding as is: a chair and a table never look alike.
What they share is style (texture statistics: Gram matrices, as in Pair), colour, and often a product
line or material named in the title and attributes. Each of those is a *channel*; recipes weigh them.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.encoders.base import Encoder, l2_normalise
from lookalike.encoders.prep import ImageLike, PreprocessCfg

log = logging.getLogger(__name__)

HSV_BINS = (8, 4, 4)
BACKGROUND = 235  # a pixel whose channels are all >= this is studio background
_TOKEN = re.compile(r"[^\w]+", re.UNICODE)


def hsv_histogram(img: Image.Image, bins: tuple[int, int, int] = HSV_BINS, bg: int = BACKGROUND) -> np.ndarray:
    """Hellinger-mapped HSV histogram of the product's pixels (white studio background ignored)."""
    img = img.convert("RGB")
    img.thumbnail((128, 128))
    rgb = np.asarray(img)
    fg = rgb.min(axis=2) < bg
    if fg.sum() < 16:  # a white product on white: use every pixel rather than none
        fg = np.ones_like(fg)
    hsv = np.asarray(img.convert("HSV")).reshape(-1, 3)[fg.ravel()].astype(np.int64)
    hb, sb, vb = bins
    code = (hsv[:, 0] * hb // 256) * sb * vb + (hsv[:, 1] * sb // 256) * vb + hsv[:, 2] * vb // 256
    hist = np.bincount(code, minlength=hb * sb * vb).astype(np.float32)
    return np.sqrt(hist / max(hist.sum(), 1.0))


def _hsv_worker(img: Image.Image) -> np.ndarray:
    return hsv_histogram(img)


class HSVHistogramEncoder(Encoder):
    """The colour channel, and the benchmark's colour-histogram reference (weight-free)."""

    name = "hsv-histogram"
    works_in_workers = True
    dim = int(np.prod(HSV_BINS))
    preprocess = PreprocessCfg()

    def worker_fn(self) -> Callable[[Image.Image], np.ndarray]:
        return functools.partial(_hsv_worker)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32)


def tokens(text: Any) -> frozenset[str]:
    """Lower-case word tokens: 'Black-brown, Oak veneer' -> {'black', 'brown', 'oak', 'veneer'}."""
    return frozenset(t for t in _TOKEN.split(str(text or "").lower()) if t)


@dataclass
class ItemFeatures:
    """Per item (rows aligned with ``ids``): L2-normalised visual blocks, token sets of text fields and,
    optionally, a product type finer than the category (e.g. "Coffee table" in "dining table"), which a
    recipe fitted on co-occurrence turns into a type-affinity channel (cooccurrence.TypeAffinity)."""

    ids: list[str]
    categories: list[str | None]
    visual: dict[str, np.ndarray] = field(default_factory=dict)
    text: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    types: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.categories) != n or any(len(v) != n for v in [*self.visual.values(), *self.text.values()]) \
                or (self.types is not None and len(self.types) != n):
            raise ValueError("every feature block needs one row per item id")
        self.pos = {pid: i for i, pid in enumerate(self.ids)}

    @property
    def channels(self) -> list[str]:
        return [f"visual:{k}" for k in sorted(self.visual)] + [f"text:{k}" for k in sorted(self.text)]

    def subset(self, rows: Sequence[int]) -> ItemFeatures:
        rows = list(rows)
        return ItemFeatures([self.ids[i] for i in rows], [self.categories[i] for i in rows],
                            {k: v[rows] for k, v in self.visual.items()},
                            {k: [v[i] for i in rows] for k, v in self.text.items()}, dict(self.info),
                            None if self.types is None else [self.types[i] for i in rows])

    def without_types(self) -> ItemFeatures:
        return ItemFeatures(self.ids, self.categories, self.visual, self.text, self.info)

    def rows_of(self, category: str) -> np.ndarray:
        return np.asarray([i for i, c in enumerate(self.categories) if c == category], np.int64)

    def channel_scores(self, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """(len(src), len(tgt), n_channels): cosine per visual block, token Jaccard per text field."""
        out = [self.visual[k][src] @ self.visual[k][tgt].T for k in sorted(self.visual)]
        for k in sorted(self.text):
            col = self.text[k]
            m = np.zeros((len(src), len(tgt)), np.float32)
            for a, i in enumerate(src):
                ti = col[i]
                if ti:
                    m[a] = [len(ti & col[j]) / len(ti | col[j]) if col[j] else 0.0 for j in tgt]
            out.append(m)
        return np.stack(out, axis=-1).astype(np.float32) if out else np.zeros((len(src), len(tgt), 0), np.float32)


def gram_blocks(images: Sequence[ImageLike], pretrained: bool, show_progress: bool = False,
                num_workers: int | None = 0, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], list[int], str]:
    """Raw Gram descriptors split per backbone stage: (ok rows, [block per stage], failed rows, weights source).

    No PCA: each stage block is already L2-normalised and small (<= 528 dims), and cross-category
    matching wants the stages as separate channels rather than mixed.
    """
    import torch

    from lookalike.encoders.gram import GramEncoder

    # random weights come from torch's global RNG: seed it, or "no weights" figures change on every run
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = GramEncoder(pretrained=pretrained, seed=seed)
    enc._raw_mode = True  # the pre-PCA descriptors; PCA is fitted on one catalogue and would mix stages
    sizes = [enc.channels if p is not None else int(enc.model.feature_info[i]["num_chs"])
             for p, i in zip(enc.projections, enc.out_indices)]
    dims = [c * (c + 1) // 2 for c in sizes]
    ok, vecs, bad = [], [], []
    for b in enc.encode_iter(images, batch_size=32, show_progress=show_progress, num_workers=num_workers):
        ok += b.indices.tolist()
        vecs.append(b.vectors)
        bad += [p for p, _ in b.errors]
    x = np.concatenate(vecs) if vecs else np.zeros((0, sum(dims)), np.float32)
    cuts = np.cumsum([0, *dims])
    blocks = [l2_normalise(x[:, cuts[i]:cuts[i + 1]]) for i in range(len(dims))]
    return np.asarray(ok, np.int64), blocks, bad, enc.weights_source or "random"


def describe_items(ids: list[str], categories: list[str | None], images: Sequence[ImageLike | Path],
                   texts: dict[str, list[Any]] | None = None, pretrained: bool = True,
                   show_progress: bool = False, num_workers: int | None = 0,
                   gram: bool = True, types: Sequence[str | None] | None = None) -> tuple[ItemFeatures, list[str]]:
    """Visual blocks and tokens (and ``types``) of every item; items whose image fails are left out and
    returned by id. ``gram=False`` skips the CNN (colour and text only: seconds instead of minutes, no torch)."""
    if gram:
        rows, blocks, _, source = gram_blocks(images, pretrained, show_progress, num_workers)
    else:
        rows, blocks, source = np.arange(len(images)), [], "not used"
    hsv = np.zeros((len(images), HSVHistogramEncoder.dim), np.float32)
    hsv_ok = np.zeros(len(images), bool)
    for b in HSVHistogramEncoder().encode_iter(images, batch_size=64, show_progress=False, num_workers=num_workers):
        hsv[b.indices] = b.vectors
        hsv_ok[b.indices] = True
    keep = [int(i) for i in rows if hsv_ok[i]]
    where = {int(r): k for k, r in enumerate(rows)}
    visual = {f"gram{s}": blk[[where[i] for i in keep]] for s, blk in enumerate(blocks)}
    visual["colour"] = hsv[keep]
    text = {k: [tokens(v[i]) for i in keep] for k, v in (texts or {}).items()}
    kept = set(keep)
    failed = sorted({ids[i] for i in range(len(ids)) if i not in kept})
    if failed:
        log.warning("goes-with features: %d of %d images could not be read and were skipped", len(failed), len(ids))
    feats = ItemFeatures([ids[i] for i in keep], [categories[i] for i in keep], visual, text,
                         {"gram_weights": source, "failed": len(failed)},
                         None if types is None else [types[i] for i in keep])
    return feats, failed
