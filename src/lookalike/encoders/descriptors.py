"""``color-texture``: a weight-free image descriptor (colour + shape + texture).

It needs no model download, so it is the encoder a fresh install can always build with, and the
baseline every learned encoder has to beat. The whole descriptor is computed in ``describe`` (a
module-level function of a PIL image), which ``Encoder.encode`` runs in worker processes; no torch here.

Pipeline per image: shrink, find the product on its near-white studio background, crop to its bounding
box, pad to a square ``work`` x ``work`` canvas, then five blocks, each power-normalised, L2-normalised and
scaled by its weight, so that no block dominates the cosine just because it has more dimensions:

- ``shape``:  a 16x16 grey thumbnail of the cropped product as "ink" (background 0, black 1)
- ``geom``:   the box's width and height as fractions of the photo, and its aspect ratio, soft-binned:
              the product's scale in the shot, which cropping would otherwise throw away
- ``colour``: HSV histograms of the product's pixels (background ignored) on a 3x3 grid;
              low-saturation pixels go to separate grey-level bins because their hue is noise
- ``hog``:    histogram of oriented gradients (scikit-image) of the grey canvas at 48x48
- ``lbp``:    uniform local-binary-pattern histograms of the product's pixels on a 2x2 grid

Since blocks are unit vectors scaled by ``w_b``, the cosine of two descriptors is
``sum_b w_b^2 cos_b / sum_b w_b^2``: the weights are a direct mix of the block similarities.
The defaults (1544 dims) were tuned on fashion-product-images-small with benchmarks/bench_descriptors.py:
leave-one-out P@10 of the same articleType 0.634 on 6,000 products (a 16x16 grey thumbnail: 0.542).
Colour is weighted low because articleType does not depend on it; ``weights={"colour": 0.5}`` trades
0.025 of that P@10 for +0.10 P@10 of the same baseColour.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from skimage.feature import hog, local_binary_pattern

from lookalike.encoders import ENCODERS
from lookalike.encoders.base import Encoder
from lookalike.encoders.prep import PreprocessCfg

log = logging.getLogger(__name__)

BLOCKS = ("shape", "geom", "colour", "hog", "lbp")

DEFAULT_PARAMS: dict[str, Any] = {
    "work": 64,            # side of the square canvas every block is computed from
    "bg_thresh": 235,      # a pixel whose channels are all >= this is studio background
    "crop": True,          # crop to the product's bounding box (False: keep the photo's framing)
    "margin": 0.04,        # bounding-box padding, as a fraction of its longer side
    "keep_aspect": True,   # pad the crop to a square (True) or stretch it (False)
    "thumb": 16,           # shape block: thumb x thumb grey thumbnail
    "thumb_mode": "ink",   # "ink" (1 - grey), "grey", "centred" (grey minus its mean), "mask" (silhouette)
    "h_bins": 8, "s_bins": 2, "v_bins": 2,   # chromatic pixels: hue x saturation x value
    "grey_bins": 4,        # achromatic pixels: value only
    "sat_min": 0.2,        # below this saturation (or value) a pixel counts as grey
    "colour_grid": 3,      # colour histograms on a grid x grid layout of the canvas
    "hog_size": 48, "hog_orient": 9, "hog_ppc": 8, "hog_cpb": 2,
    "lbp_points": 8, "lbp_radius": 1, "lbp_grid": 2,
    "power": 0.5,          # signed power normalisation of every block (0.5 = Hellinger for histograms)
    "geom_bins": 8,        # geom block: soft bins for box width, box height and log aspect ratio
    "weights": {"shape": 0.5, "geom": 0.5, "colour": 0.25, "hog": 1.0, "lbp": 1.0},
}


def resolve_params(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DEFAULT_PARAMS`` updated with ``extra``; unknown keys or blocks raise ValueError."""
    extra = dict(extra or {})
    unknown = set(extra) - set(DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown color-texture parameters {sorted(unknown)}; valid: {sorted(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **extra}
    weights = {**DEFAULT_PARAMS["weights"], **dict(extra.get("weights", {}))}
    bad = set(weights) - set(BLOCKS)
    if bad:
        raise ValueError(f"unknown color-texture blocks {sorted(bad)}; valid: {list(BLOCKS)}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError("color-texture needs at least one block with a positive weight")
    p["weights"] = weights
    if p["thumb_mode"] not in ("ink", "grey", "centred", "mask"):
        raise ValueError(f"thumb_mode must be ink, grey, centred or mask, got {p['thumb_mode']!r}")
    return p


# ---- preparation -----------------------------------------------------------------------------------

def _foreground(rgb: np.ndarray, thresh: int) -> np.ndarray:
    return rgb.min(axis=2) < thresh


def prepare(img: Image.Image, p: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """RGB image -> (uint8 (work, work, 3) canvas of the cropped product, bool foreground mask,
    (width, height) of the product's box as fractions of the photo's)."""
    work = int(p["work"])
    img = img.convert("RGB") if img.mode != "RGB" else img
    # integer reduce first: big catalogue photos would otherwise dominate the cost of the descriptor
    factor = max(img.width, img.height) // (4 * work)
    if factor >= 2:
        img = img.reduce(factor)
    rgb = np.asarray(img)
    fg = _foreground(rgb, p["bg_thresh"])
    box = (1.0, 1.0)
    if p["crop"] and fg.sum() >= 4:
        rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        pad = round(p["margin"] * max(bottom - top, right - left))
        top, left = max(0, top - pad), max(0, left - pad)
        bottom, right = min(rgb.shape[0], bottom + pad), min(rgb.shape[1], right + pad)
        box = ((right - left) / rgb.shape[1], (bottom - top) / rgb.shape[0])
        img = img.crop((int(left), int(top), int(right), int(bottom)))
    if p["keep_aspect"]:
        side = max(img.width, img.height)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = canvas
    out = np.asarray(img.resize((work, work), Image.BILINEAR, reducing_gap=2.0))
    mask = _foreground(out, p["bg_thresh"])
    if mask.mean() < 0.01:  # a white product on white: describe the whole canvas rather than nothing
        mask = np.ones_like(mask)
    return out, mask, box


def _grid_hist(codes: np.ndarray, mask: np.ndarray, n_codes: int, grid: int) -> np.ndarray:
    """Histogram of integer ``codes`` over ``mask`` pixels, one per cell of a grid x grid layout."""
    h, w = codes.shape
    cell = (np.arange(h)[:, None] * grid // h) * grid + (np.arange(w)[None, :] * grid // w)
    idx = (cell * n_codes + codes)[mask]
    hist = np.bincount(idx, minlength=grid * grid * n_codes).astype(np.float32)
    return hist / max(1, int(mask.sum()))


# ---- blocks ------------------------------------------------------------------------------------------

def _soft_onehot(x: float, lo: float, hi: float, bins: int) -> np.ndarray:
    """Gaussian soft binning: the dot product of two codes decays smoothly with their distance."""
    centres = np.linspace(lo, hi, bins, dtype=np.float32)
    sigma = (hi - lo) / max(1, bins - 1)
    return np.exp(-0.5 * ((np.float32(x) - centres) / sigma) ** 2).astype(np.float32)


def geom_block(box: tuple[float, float], p: dict[str, Any]) -> np.ndarray:
    """How much of the photo the product fills and its aspect ratio: the scale cue cropping removes."""
    w, h = box
    n = int(p["geom_bins"])
    return np.concatenate([_soft_onehot(w, 0.0, 1.0, n), _soft_onehot(h, 0.0, 1.0, n),
                           _soft_onehot(float(np.log2(max(h, 1e-3) / max(w, 1e-3))), -2.0, 2.0, n)])


def shape_block(rgb: np.ndarray, mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    t = int(p["thumb"])
    if p["thumb_mode"] == "mask":
        m = Image.fromarray(mask.astype(np.uint8) * 255).resize((t, t), Image.BOX)
        return np.asarray(m, np.float32).ravel() / 255.0
    g = np.asarray(Image.fromarray(rgb).convert("L").resize((t, t), Image.BOX), np.float32) / 255.0
    if p["thumb_mode"] == "ink":
        g = 1.0 - g
    elif p["thumb_mode"] == "centred":
        g = g - g.mean()
    return g.ravel()


def colour_block(rgb: np.ndarray, mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV"), np.int32)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hb, sb, vb, gb = int(p["h_bins"]), int(p["s_bins"]), int(p["v_bins"]), int(p["grey_bins"])
    smin = round(float(p["sat_min"]) * 255)
    chromatic = (sat >= smin) & (val >= smin)
    s_idx = np.minimum(sb - 1, (sat - smin).clip(0) * sb // max(1, 256 - smin))
    v_idx = np.minimum(vb - 1, (val - smin).clip(0) * vb // max(1, 256 - smin))
    chroma_code = (hue * hb // 256) * (sb * vb) + s_idx * vb + v_idx
    grey_code = hb * sb * vb + val * gb // 256
    codes = np.where(chromatic, chroma_code, grey_code)
    return _grid_hist(codes, mask, hb * sb * vb + gb, int(p["colour_grid"]))


def hog_block(rgb: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    size = int(p["hog_size"])
    g = np.asarray(Image.fromarray(rgb).convert("L").resize((size, size), Image.BILINEAR), np.float32) / 255.0
    ppc, cpb = int(p["hog_ppc"]), int(p["hog_cpb"])
    return hog(g, orientations=int(p["hog_orient"]), pixels_per_cell=(ppc, ppc), cells_per_block=(cpb, cpb),
               block_norm="L2-Hys", feature_vector=True).astype(np.float32)


def lbp_block(rgb: np.ndarray, mask: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    points = int(p["lbp_points"])
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    codes = local_binary_pattern(grey, points, float(p["lbp_radius"]), method="uniform").astype(np.int64)
    return _grid_hist(codes, mask, points + 2, int(p["lbp_grid"]))


def _normalise(v: np.ndarray, power: float) -> np.ndarray:
    if power != 1.0:
        v = np.sign(v) * np.abs(v) ** power
    n = float(np.linalg.norm(v))
    return (v / n if n > 1e-12 else v).astype(np.float32)


def describe_blocks(img: Image.Image, p: dict[str, Any], blocks: tuple[str, ...] = BLOCKS) -> dict[str, np.ndarray]:
    """Each requested block, power- and L2-normalised but not weighted (the benchmark mixes them)."""
    rgb, mask, box = prepare(img, p)
    raw: dict[str, Callable[[], np.ndarray]] = {
        "shape": lambda: shape_block(rgb, mask, p),
        "geom": lambda: geom_block(box, p),
        "colour": lambda: colour_block(rgb, mask, p),
        "hog": lambda: hog_block(rgb, p),
        "lbp": lambda: lbp_block(rgb, mask, p),
    }
    return {b: _normalise(raw[b](), float(p["power"])) for b in blocks}


def describe(img: Image.Image, cfg: PreprocessCfg) -> np.ndarray:
    """PIL RGB image -> 1-D float32 descriptor: the weighted concatenation of the blocks (worker side)."""
    p = resolve_params(cfg.extra)
    used = tuple(b for b in BLOCKS if p["weights"][b] > 0)
    parts = describe_blocks(img, p, used)
    return np.concatenate([parts[b] * np.float32(p["weights"][b]) for b in used])


# ---- the encoder -------------------------------------------------------------------------------------

@ENCODERS.register("color-texture", help="weight-free colour histograms + shape thumbnail + HOG/LBP texture")
class ColorTextureEncoder(Encoder):
    """Weight-free descriptor encoder; keyword arguments override ``DEFAULT_PARAMS``
    (e.g. ``create_encoder("color-texture", weights={"colour": 1.0})``)."""

    name = "color-texture"
    works_in_workers = True

    def __init__(self, **params: Any) -> None:
        p = resolve_params(params)
        work = int(p["work"])
        self.preprocess = PreprocessCfg(size=(work, work), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                        interpolation="bilinear", resize="pad", extra=p)
        # the dimension follows from the parameters; computing one descriptor keeps it exact
        probe = describe_blocks(Image.new("RGB", (work, work), (255, 255, 255)), p)
        self.block_dims = {b: int(v.size) for b, v in probe.items() if p["weights"][b] > 0}
        self.dim = sum(self.block_dims.values())
        log.debug("color-texture blocks %s, dim %d", self.block_dims, self.dim)

    def worker_fn(self) -> Callable[[Image.Image], np.ndarray]:
        return functools.partial(describe, cfg=self.preprocess)

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "params": dict(self.preprocess.extra), "block_dims": dict(self.block_dims)}
