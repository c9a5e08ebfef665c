"""Batched augmentation of uint8 product photos, in torch on the whole batch (one ``grid_sample`` call),
because per-image PIL transforms would cost more than the small CNN's forward pass on this CPU.

Suited to studio product shots on white: horizontal flips (a left shoe is still a shoe), small zooms and
shifts with white fill (never black borders), light colour jitter (colour is part of what makes two products
look alike, so it moves little), and no vertical flips (products have an up).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lookalike.encoders.prep import PreprocessCfg


@dataclass(frozen=True)
class AugmentCfg:
    hflip: float = 0.5  # probability
    zoom: tuple[float, float] = (0.9, 1.15)  # content scale: > 1 crops in, < 1 shrinks onto white
    aspect: float = 0.06  # max |log| change of the aspect ratio
    shift: float = 0.06  # max shift, as a fraction of the image side
    rotate: float = 0.0  # max degrees
    brightness: float = 0.1  # max relative change
    contrast: float = 0.1
    saturation: float = 0.1
    grayscale: float = 0.0  # probability

    @classmethod
    def light(cls) -> AugmentCfg:
        """For the classifier and the autoencoder."""
        return cls()

    @classmethod
    def strong(cls) -> AugmentCfg:
        """SimCLR-style views for the contrastive recipe: bigger crops, more colour change, some grey."""
        return cls(zoom=(0.75, 1.6), aspect=0.15, shift=0.12, rotate=8.0, brightness=0.3, contrast=0.3,
                   saturation=0.4, grayscale=0.2)

    @classmethod
    def none(cls) -> AugmentCfg:
        return cls(hflip=0.0, zoom=(1.0, 1.0), aspect=0.0, shift=0.0, brightness=0.0, contrast=0.0,
                   saturation=0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentCfg:
        d = dict(d)
        d["zoom"] = tuple(d.get("zoom", (1.0, 1.0)))
        return cls(**d)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def normalise(x: torch.Tensor, pre: PreprocessCfg) -> torch.Tensor:
    """[0, 1] (B, 3, H, W) -> the model's input, with the preprocess mean and std."""
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


class BatchAugment:
    """``aug(uint8 batch, generator) -> [0, 1] float batch``; deterministic for a given generator state."""

    def __init__(self, cfg: AugmentCfg) -> None:
        self.cfg = cfg

    def geometry(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, b = self.cfg, x.shape[0]
        zoom = _uniform(b, *c.zoom, gen)
        ratio = torch.exp(_uniform(b, -c.aspect, c.aspect, gen))
        sx, sy = 1.0 / (zoom * ratio.sqrt()), 1.0 / (zoom / ratio.sqrt())
        flip = torch.where(torch.rand(b, generator=gen) < c.hflip, -1.0, 1.0)
        ang = _uniform(b, -c.rotate, c.rotate, gen) * (math.pi / 180.0)
        cos, sin = torch.cos(ang), torch.sin(ang)
        tx, ty = _uniform(b, -2 * c.shift, 2 * c.shift, gen), _uniform(b, -2 * c.shift, 2 * c.shift, gen)
        theta = torch.stack([torch.stack([sx * cos * flip, -sy * sin, tx], 1),
                             torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # sample (x - 1) so that zero padding comes back as white, the studio background
        return F.grid_sample(x - 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1.0

    def colour(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c, b = self.cfg, x.shape[0]
        shape = (b, 1, 1, 1)
        x = x * _uniform(b, 1 - c.brightness, 1 + c.brightness, gen).view(shape)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * _uniform(b, 1 - c.contrast, 1 + c.contrast, gen).view(shape) + mean
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        sat = _uniform(b, 1 - c.saturation, 1 + c.saturation, gen).view(shape)
        if c.grayscale > 0:
            sat = torch.where((torch.rand(b, generator=gen) < c.grayscale).view(shape), 0.0, sat)
        x = (x - grey) * sat + grey
        return x.clamp_(0.0, 1.0)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        out = to_float(x)
        geometric = self.cfg.hflip > 0 or self.cfg.zoom != (1.0, 1.0) or self.cfg.shift > 0 or self.cfg.rotate > 0
        if geometric:
            out = self.geometry(out, gen)
        if self.cfg.brightness > 0 or self.cfg.contrast > 0 or self.cfg.saturation > 0 or self.cfg.grayscale > 0:
            out = self.colour(out, gen)
        return out.clamp_(0.0, 1.0)
