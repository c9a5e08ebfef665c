"""Studio-to-shopper augmentation: turn catalogue shots on white into plausible phone photos, in batched torch.

The catalogue is studio thumbnails on a white background; shoppers photograph clothes on beds, floors and
hangers, at an angle, in poor light. An encoder trained only on studio shots learns that "white background,
centred, evenly lit" is part of every product, so the recipe below re-stages each shot:

1. cut the product out of its near-white background (``product_mask``: threshold, morphological clean-up,
   background = what floods in from the border, so white prints inside stay product; the outline's alpha
   comes from how white each edge pixel is, so composites get no white halo);
2. composite it on a background (``backgrounds``: wood, fabric, gradients, noisy flat colours, including
   white-ish and dark ones, and crops of real room photos when a bank is given);
3. move the camera: scale, shift, rotation, flip and a perspective tilt, as one homography and one
   ``grid_sample`` on the premultiplied product and its mask, so off-frame areas show background, never black;
4. light and sensor: a soft cast shadow, white-balance casts, exposure, vignetting, defocus blur, noise,
   then the tone curve (contrast, saturation, gamma) and, last, JPEG artefacts.

Everything is vectorised over the batch except JPEG, the one per-image step (PIL encode/decode), which is why
it only runs on a fraction of the batch. ``ShopperAugment`` is deterministic for a given generator state.
"""
from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from lookalike.training.augment import to_float

log = logging.getLogger(__name__)

BG_KINDS = ("wood", "fabric", "gradient", "flat", "bank")


@dataclass(frozen=True)
class DomainCfg:
    p_composite: float = 0.85  # the rest stay on white: shoppers do sometimes shoot on a white sheet
    # a pixel is background when all channels are >= this; studio white is ~1.0, and anything lower eats
    # white garments (0.92 cut most white shirts in half on the catalogue)
    mask_thresh: float = 0.97
    bg_weights: tuple[float, float, float, float, float] = (0.15, 0.15, 0.1, 0.25, 0.35)  # per BG_KINDS
    scale: tuple[float, float] = (0.55, 1.0)  # studio frame size in the output; the product spans ~45-100%
    shift: float = 0.08  # extra shift beyond what the scale leaves free, fraction of the half side
    rotate: float = 20.0  # max degrees
    hflip: float = 0.5
    perspective: float = 0.12  # max homography tilt terms; 0.12 foreshortens one side by up to ~25%
    brightness: float = 0.35  # max relative exposure change
    contrast: float = 0.3
    saturation: float = 0.3
    white_balance: float = 0.15  # max |log gain| of the warm/cool axis (red vs blue); tint gets half
    gamma: tuple[float, float] = (0.75, 1.35)
    p_shadow: float = 0.35
    shadow: tuple[float, float] = (0.2, 0.5)  # darkening inside the shadow
    vignette: float = 0.35  # max darkening in the corners
    p_blur: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 0.9)  # pixels; more erases a 60x80 thumbnail, and phones focus
    noise: float = 0.015  # max std; small because a phone photo shrunk to a thumbnail averages most away
    p_jpeg: float = 0.3
    jpeg_quality: tuple[int, int] = (20, 80)

    @classmethod
    def none(cls) -> DomainCfg:
        return cls(p_composite=0.0, scale=(1.0, 1.0), shift=0.0, rotate=0.0, hflip=0.0, perspective=0.0,
                   brightness=0.0, contrast=0.0, saturation=0.0, white_balance=0.0, gamma=(1.0, 1.0),
                   p_shadow=0.0, vignette=0.0, p_blur=0.0, noise=0.0, p_jpeg=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DomainCfg:
        d = dict(d)
        for k in ("bg_weights", "scale", "gamma", "shadow", "blur_sigma", "jpeg_quality"):
            if k in d:  # JSON turns tuples into lists, and a frozen cfg must stay hashable
                d[k] = tuple(d[k])
        return cls(**d)


def _uniform(shape: int | tuple[int, ...], lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else shape
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def _coords(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (1, 1, H, W) in [-1, 1] along each axis (align_corners=False convention)."""
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    return xs.view(1, 1, 1, w).expand(1, 1, h, w), ys.view(1, 1, h, 1).expand(1, 1, h, w)


def _lowfreq(b: int, h: int, w: int, gen: torch.Generator, cells: int = 4) -> torch.Tensor:
    """Smooth noise (B, 1, H, W) in about [-1, 1]: a coarse random grid upsampled, the cheap Perlin stand-in."""
    return F.interpolate(torch.rand(b, 1, cells, cells, generator=gen) * 2 - 1, size=(h, w), mode="bicubic",
                         align_corners=False)


def _blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Separable gaussian blur with one sigma per sample, as a depthwise conv over the whole batch."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * sigma.view(-1, 1).clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


# ---------------------------------------------------------------- product mask

def _morph3(m: torch.Tensor, op: Callable[..., torch.Tensor], fill: int) -> torch.Tensor:
    """3x3 max or min filter from shifted slices of a uint8 mask: ~10x cheaper than ``max_pool2d`` on floats,
    which dominated the whole augmentation on this CPU."""
    p = F.pad(m, (1, 1, 1, 1), value=fill)
    r = op(op(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return op(op(r[..., :-2, :], r[..., 1:-1, :]), r[..., 2:, :])


def _dilate(m: torch.Tensor) -> torch.Tensor:
    return _morph3(m, torch.maximum, 0)


def _erode(m: torch.Tensor) -> torch.Tensor:
    return _morph3(m, torch.minimum, 1)  # the outside counts as product, so the frame edge does not erode


def _spread_runs(seed: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
    """Along the last axis, seed every whole run of ``free`` pixels that holds a seed (bool tensors)."""
    prev = F.pad(free[..., :-1], (1, 0), value=False)
    run = torch.cumsum((free & ~prev).flatten(), 0)  # each run gets an id; row starts open a new run
    hit = torch.zeros(free.numel() + 1, dtype=torch.uint8)
    hit.scatter_reduce_(0, run, (seed & free).flatten().view(torch.uint8), "amax")
    # index_select, not hit[run]: advanced indexing is ~4x slower on CPU
    return hit.index_select(0, run).view(torch.bool).view(free.shape) & free


def product_mask(x01: torch.Tensor, thresh: float = 0.97) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> soft mask (B, 1, H, W) in [0, 1] of the product on its near-white background."""
    darkest = torch.minimum(torch.minimum(x01[:, 0:1], x01[:, 1:2]), x01[:, 2:3])
    fg = (darkest < thresh).to(torch.uint8)
    fg = _dilate(_erode(fg))  # open: JPEG speckles in the white are not product
    fg = _erode(_dilate(fg))  # close: rejoin outlines broken by highlights
    # Background is what a flood from the border reaches through non-product pixels, so white prints and
    # highlights inside the product stay product while the gap between trouser legs stays background.
    # Each pass floods whole row (then column) runs at once, so row-column-row-column reaches every pocket
    # with up to three turns (all of them on a sample of 256 catalogue shots) where 3x3 geodesic dilation
    # would need ~H+W passes. A pocket it misses stays product: a white speck, not a hole in the garment.
    free = fg == 0
    seed = torch.zeros_like(free)
    seed[..., 0, :], seed[..., -1, :], seed[..., :, 0], seed[..., :, -1] = True, True, True, True
    seed &= free
    for _ in range(2):
        seed = _spread_runs(seed, free)
        seed = _spread_runs(seed.transpose(-1, -2), free.transpose(-1, -2)).transpose(-1, -2)
    solid = (~seed).to(torch.uint8)
    # The outline's last two pixels mix product with studio white (anti-aliasing, JPEG ringing): there the
    # alpha is how far a pixel is from white, so composites get no white fringe; the blur softens the cut.
    core = _erode(_erode(solid)).float()
    alpha = torch.maximum(core, solid.float() * ((1.0 - darkest) / 0.25).clamp(0.0, 1.0))
    return _blur(alpha, torch.full((x01.shape[0],), 0.5), radius=1)


# ---------------------------------------------------------------- backgrounds

def _hash(v: torch.Tensor) -> torch.Tensor:
    """A cheap deterministic pseudo-random value in [0, 1) per (integer-valued) input."""
    return torch.frac(torch.sin(v * 12.9898 + 4.1414) * 43758.5453).abs()


def wood_texture(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Floorboards or a table top: boards along a random direction, fine grain lines along them, gently warped
    by smooth noise, each board a little lighter or darker, in browns."""
    x, y = _coords(h, w)
    ang = _uniform((b, 1, 1, 1), 0, math.pi, gen)
    u, v = x * torch.cos(ang) + y * torch.sin(ang), -x * torch.sin(ang) + y * torch.cos(ang)
    row = torch.floor((v + 2) * _uniform((b, 1, 1, 1), 1.5, 4, gen))  # boards side by side across the grain
    board = row * 7 + torch.floor((u + 2) * 0.7 + _hash(row))  # staggered board ends along the grain
    freq = _uniform((b, 1, 1, 1), 12, 28, gen)
    warp = 0.05 * _lowfreq(b, h, w, gen, 3)
    grain = torch.sin(freq * math.pi * (v + warp) + 6.28 * _hash(board))
    grain = 0.6 * grain + 0.4 * torch.sin(freq * 2.7 * math.pi * (v + 1.5 * warp) + 3.0 * _hash(board + 1))
    red = _uniform(b, 0.25, 0.9, gen)  # dark walnut to pale oak; green and blue follow red to stay brown
    base = torch.stack([red, red * _uniform(b, 0.6, 0.8, gen), red * _uniform(b, 0.3, 0.55, gen)], 1)
    shade = 1 + 0.1 * grain + 0.2 * (_hash(board + 2) - 0.5)
    return (base.view(b, 3, 1, 1) * shade).clamp(0, 1)


def fabric_texture(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Bed sheets, throws, carpets: a fine weave (two orthogonal sinusoids) with soft folds, any colour."""
    x, y = _coords(h, w)
    ang = _uniform((b, 1, 1, 1), -0.3, 0.3, gen)
    u, v = x * torch.cos(ang) + y * torch.sin(ang), -x * torch.sin(ang) + y * torch.cos(ang)
    period = _uniform((b, 1, 1, 1), 2.2, 5.0, gen) * 2 / max(h, w)  # a weave of 2-5 px
    weave = torch.sin(u * math.pi / period) * torch.sin(v * math.pi / period)
    folds = _lowfreq(b, h, w, gen, 3)
    colour = torch.rand(b, 3, 1, 1, generator=gen) * 0.8 + 0.1
    shade = 1 + 0.08 * weave + 0.2 * folds + 0.02 * torch.randn(b, 1, h, w, generator=gen)
    return (colour * shade).clamp(0, 1)


def gradient_texture(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A wall or a floor under uneven light: a smooth blend between two random colours."""
    x, y = _coords(h, w)
    ang = _uniform((b, 1, 1, 1), 0, 2 * math.pi, gen)
    t = ((x * torch.cos(ang) + y * torch.sin(ang)) * _uniform((b, 1, 1, 1), 0.3, 0.7, gen) + 0.5).clamp(0, 1)
    c = torch.rand(b, 2, 3, 1, 1, generator=gen)
    grey = c.mean(dim=2, keepdim=True)
    c = grey + (c - grey) * _uniform((b, 1, 1, 1, 1), 0.2, 0.9, gen)  # rooms are seldom neon
    c0, c1 = c[:, 0], c[:, 1]
    return (c0 + (c1 - c0) * t + 0.01 * torch.randn(b, 1, h, w, generator=gen)).clamp(0, 1)


def flat_texture(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Duvets, tiles, walls: one colour with shading and grain. Over a third are white-ish or light grey and a
    quarter dark, so the model cannot learn that a photo's background is never white."""
    kind = torch.rand(b, 1, generator=gen)
    grey = torch.where(kind < 0.4, _uniform((b, 1), 0.72, 0.97, gen), _uniform((b, 1), 0.04, 0.3, gen))
    tint = (torch.rand(b, 3, generator=gen) - 0.5) * 0.06
    colour = torch.where(kind < 0.65, grey + tint, torch.rand(b, 3, generator=gen) * 0.7 + 0.15)
    shade = 1 + 0.12 * _lowfreq(b, h, w, gen, 3) + 0.012 * torch.randn(b, 1, h, w, generator=gen)
    return (colour.view(b, 3, 1, 1) * shade).clamp(0, 1)


def bank_crops(bank: torch.Tensor, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Random (h, w)-shaped crops of room photos (uint8 (N, Hb, Wb, 3)), each 35-100% of the short side."""
    n, hb, wb, _ = bank.shape
    idx = torch.randint(0, n, (b,), generator=gen)
    src = bank.index_select(0, idx).permute(0, 3, 1, 2).float().div_(255.0)
    # crop height and width as fractions of the bank image, keeping the output's aspect ratio
    side = _uniform(b, 0.35, 1.0, gen)
    fh, fw = side * min(1.0, (h / w) * (wb / hb)), side * min(1.0, (w / h) * (hb / wb))
    cx, cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - fw), (torch.rand(b, generator=gen) * 2 - 1) * (1 - fh)
    zero = torch.zeros(b)
    theta = torch.stack([torch.stack([fw, zero, cx], 1), torch.stack([zero, fh, cy], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


_GENERATORS: dict[str, Callable[[int, int, int, torch.Generator], torch.Tensor]] = {
    "wood": wood_texture, "fabric": fabric_texture, "gradient": gradient_texture, "flat": flat_texture}


def backgrounds(b: int, h: int, w: int, gen: torch.Generator, bank: torch.Tensor | None = None,
                weights: tuple[float, ...] = DomainCfg.bg_weights) -> torch.Tensor:
    """(B, 3, H, W) backgrounds in [0, 1], each kind drawn with ``weights`` (per ``BG_KINDS``); the bank's
    weight is ignored without a bank."""
    wts = torch.tensor([float(v) for v in weights[: len(BG_KINDS)]])
    if bank is None or len(bank) == 0:
        wts[BG_KINDS.index("bank")] = 0.0
    if float(wts.sum()) <= 0:
        raise ValueError(f"no background kind has a positive weight: {weights}")
    kind = torch.multinomial(wts, b, replacement=True, generator=gen)
    out = torch.empty(b, 3, h, w)
    # each kind is generated only for its own samples, so adding kinds costs nothing per image
    for k, name in enumerate(BG_KINDS):
        sel = (kind == k).nonzero().flatten()
        if len(sel) == 0:
            continue
        n = len(sel)
        out[sel] = bank_crops(bank, n, h, w, gen) if name == "bank" else _GENERATORS[name](n, h, w, gen)
    return out


def ikea_room_paths(root: Path) -> list[Path]:
    """The IKEA room-scene photos under ``root`` (the ``ikea`` dataset folder), sorted, unreadable ones skipped."""
    root = Path(root)
    found, bad = [], 0
    for p in sorted((root / "images" / "room_scenes").glob("*.jpg")):
        try:
            with Image.open(p) as im:
                im.verify()
            found.append(p)
        except (OSError, SyntaxError) as e:
            bad += 1
            log.warning("skipping unreadable room scene %s: %s", p, e)
    log.info("found %d IKEA room scenes under %s (%d unreadable)", len(found), root, bad)
    return found


def load_background_bank(paths: list[Path], size: int = 160, limit: int | None = None) -> torch.Tensor:
    """Decode room photos to a uint8 (N, size, size, 3) bank: short side resized to ``size``, centre crop."""
    out = []
    for p in list(paths)[:limit]:
        try:
            with Image.open(p) as im:
                im.draft("RGB", (size, size))  # JPEG decodes at a reduced scale: ~4x faster on 1024 px rooms
                out.append(np.asarray(ImageOps.fit(im.convert("RGB"), (size, size), Image.Resampling.LANCZOS)))
        except OSError as e:
            log.warning("skipping background %s: %s", p, e)
    if not out:
        raise ValueError("no readable background images")
    log.info("background bank: %d images at %d px", len(out), size)
    return torch.from_numpy(np.stack(out))


# ---------------------------------------------------------------- the augmentation

class ShopperAugment:
    """``aug(uint8 (B, H, W, 3), generator) -> float (B, 3, H, W) in [0, 1]``, studio shots made shopper-like."""

    def __init__(self, cfg: DomainCfg, bank: torch.Tensor | None = None) -> None:
        self.cfg, self.bank = cfg, bank
        log.debug("ShopperAugment %s, bank of %d", cfg, 0 if bank is None else len(bank))

    def homography(self, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        """(B, 3, 3) maps from output to input normalised coordinates (what ``grid_sample`` needs)."""
        c = self.cfg
        s = _uniform(b, *c.scale, gen)
        ang = _uniform(b, -c.rotate, c.rotate, gen) * (math.pi / 180.0)
        flip = torch.where(torch.rand(b, generator=gen) < c.hflip, -1.0, 1.0)
        # shift within the room the scale leaves, so the product stays mostly in frame
        room = (1 - s).clamp_min(0) + c.shift
        tx, ty = _uniform(b, -1, 1, gen) * room, _uniform(b, -1, 1, gen) * room
        g, k = _uniform(b, -c.perspective, c.perspective, gen), _uniform(b, -c.perspective, c.perspective, gen)
        one = torch.ones(b)
        cos, sin = torch.cos(ang), torch.sin(ang)
        # forward map studio -> photo, in square (pixel-proportional) units so rotation does not shear
        fwd = torch.stack([torch.stack([s * cos * flip, -s * sin, tx], 1),
                           torch.stack([s * sin * flip, s * cos, ty], 1),
                           torch.stack([g, k, one], 1)], 1)
        m = max(h, w)
        sq = torch.diag(torch.tensor([w / m, h / m, 1.0]))
        fwd = torch.linalg.inv(sq) @ fwd @ sq
        return torch.linalg.inv(fwd)

    def warp(self, premult: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = premult.shape
        x, y = _coords(h, w)
        base = torch.stack([x[0, 0], y[0, 0], torch.ones(h, w)], -1)  # (H, W, 3)
        pts = torch.einsum("bij,hwj->bhwi", self.homography(b, h, w, gen), base)
        grid = pts[..., :2] / pts[..., 2:].clamp_min(1e-3)
        # zero padding is right here: premultiplied colour and mask both vanish off-frame, showing background
        return F.grid_sample(premult, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def shadow(self, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, (b, _, h, w) = self.cfg, out.shape
        sel = (torch.rand(b, generator=gen) < c.p_shadow).nonzero().flatten()
        if not len(sel):
            return out
        n, x, y = len(sel), *_coords(h, w)
        ang = _uniform((n, 1, 1, 1), 0, 2 * math.pi, gen)
        plane = x * torch.cos(ang) + y * torch.sin(ang) - _uniform((n, 1, 1, 1), -0.6, 0.6, gen)
        cx, cy = _uniform((n, 1, 1, 1), -0.8, 0.8, gen), _uniform((n, 1, 1, 1), -0.8, 0.8, gen)
        rx, ry = _uniform((n, 1, 1, 1), 0.3, 0.9, gen), _uniform((n, 1, 1, 1), 0.3, 0.9, gen)
        ellipse = 1 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2
        # a phone or a person between the lamp and the garment: a half-plane or a blob, soft-edged
        inside = torch.where(torch.rand(n, 1, 1, 1, generator=gen) < 0.5, plane, ellipse)
        soft = torch.sigmoid(inside / _uniform((n, 1, 1, 1), 0.05, 0.25, gen))
        out[sel] = out[sel] * (1 - _uniform((n, 1, 1, 1), *c.shadow, gen) * soft)
        return out

    def light(self, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Exposure and white balance: a warm bulb or a cool window shifts red against blue."""
        c, b = self.cfg, out.shape[0]
        temp = _uniform(b, -c.white_balance, c.white_balance, gen)
        tint = _uniform(b, -c.white_balance / 2, c.white_balance / 2, gen)
        gains = torch.exp(torch.stack([temp, tint, -temp], 1)) * _uniform((b, 1), 1 - c.brightness,
                                                                            1 + c.brightness, gen)
        return out * gains.view(b, 3, 1, 1)

    def vignette(self, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = out.shape
        x, y = _coords(h, w)
        strength = _uniform((b, 1, 1, 1), 0, self.cfg.vignette, gen)
        return out * (1 - strength * (x ** 2 + y ** 2) / 2)

    def tone(self, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The phone's processing: contrast and saturation around the image's own mean, then gamma."""
        c, (b, _, h, w) = self.cfg, out.shape
        con = _uniform((b, 1, 1), 1 - c.contrast, 1 + c.contrast, gen)
        sat = _uniform((b, 1, 1), 1 - c.saturation, 1 + c.saturation, gen)
        # Both are linear, and saturation maps grey to grey, so together they are one 3x3 matrix per image
        # applied in one bmm: con * (sat * I + (1 - sat) * 1 lum^T) x + (1 - con) * mean.
        lum = torch.tensor([[0.299, 0.587, 0.114]]).expand(3, 3)
        mat = con * (sat * torch.eye(3) + (1 - sat) * lum)
        flat = out.reshape(b, 3, h * w)
        mean = flat.mean(dim=(1, 2)).view(b, 1, 1)
        out = torch.baddbmm((1 - con) * mean, mat, flat).view(b, 3, h, w)
        lg = torch.exp(_uniform(b, math.log(c.gamma[0]), math.log(c.gamma[1]), gen)).view(b, 1, 1, 1)
        return out.clamp_(0, 1).pow_(lg)

    def jpeg(self, out: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The one per-image step: PIL has the real codec, and its blocking and ringing are hard to fake."""
        c, b = self.cfg, out.shape[0]
        on = (torch.rand(b, generator=gen) < c.p_jpeg).nonzero().flatten().tolist()
        quality = torch.randint(c.jpeg_quality[0], c.jpeg_quality[1] + 1, (b,), generator=gen).tolist()
        if not on:
            return out
        u8 = (out[on] * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        dec = []
        for img, i in zip(u8, on, strict=True):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=int(quality[i]))
            buf.seek(0)
            dec.append(np.asarray(Image.open(buf).convert("RGB")))
        out[on] = to_float(torch.from_numpy(np.stack(dec)))
        return out

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.cfg
        out = to_float(x)
        b, _, h, w = out.shape
        geometric = (c.scale != (1.0, 1.0) or c.shift > 0 or c.rotate > 0 or c.hflip > 0 or c.perspective > 0)
        if c.p_composite > 0 or geometric:
            composite = torch.rand(b, generator=gen) < c.p_composite
            alpha = torch.ones(b, 1, h, w)
            if bool(composite.any()):
                mask = product_mask(out, c.mask_thresh)
                cover = mask.mean(dim=(1, 2, 3))
                # an almost empty mask is a white product on white, an almost full one a photo that was never
                # on white: neither can be cut out, so those stay as they are
                composite &= (cover > 0.04) & (cover < 0.97)
                alpha = torch.where(composite.view(b, 1, 1, 1), mask, alpha)
            bg = torch.ones(b, 3, h, w)
            if bool(composite.any()):
                sel = composite.nonzero().flatten()
                bg[sel] = backgrounds(len(sel), h, w, gen, self.bank, c.bg_weights)
            premult = torch.cat([out * alpha, alpha], 1)
            if geometric:
                premult = self.warp(premult, gen)
            out = premult[:, :3] + (1 - premult[:, 3:]) * bg
        if c.p_shadow > 0:
            out = self.shadow(out, gen)
        if c.brightness > 0 or c.white_balance > 0:
            out = self.light(out, gen)
        if c.vignette > 0:
            out = self.vignette(out, gen)
        if c.p_blur > 0:
            sel = (torch.rand(b, generator=gen) < c.p_blur).nonzero().flatten()
            sigma = _uniform(b, *c.blur_sigma, gen)
            if len(sel):
                out[sel] = _blur(out[sel], sigma[sel])
        if c.noise > 0:
            std = _uniform((b, 1, 1, 1), 0, c.noise, gen)
            # mostly luma noise with some chroma, as phone denoisers leave it
            n = torch.randn(b, 3, h, w, generator=gen)
            out = out + std * (0.5 * n + 1.2 * n.mean(dim=1, keepdim=True))
        if c.contrast > 0 or c.saturation > 0 or c.gamma != (1.0, 1.0):
            out = self.tone(out.clamp(0, 1), gen)
        out = out.clamp_(0.0, 1.0)
        if c.p_jpeg > 0:
            out = self.jpeg(out, gen)
        return out
