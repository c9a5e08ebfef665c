"""Image preparation that runs in worker processes: decode, orient, resize. No torch here, so a spawned
worker starts fast and never loads a model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from lookalike.imaging import load_image

ImageLike = Image.Image | Path | str | bytes

_INTERP = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
           "lanczos": Image.LANCZOS, "box": Image.BOX}


@dataclass(frozen=True)
class PreprocessCfg:
    """How an encoder wants its pixels: data on the encoder, never code at call sites.

    ``resize``: ``pad`` keeps the aspect ratio and pads with white (product shots on white);
    ``squash`` stretches; ``crop`` resizes the short side to size/crop_pct and centre-crops (timm's eval).
    """

    size: tuple[int, int] = (224, 224)  # (height, width)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    resize: Literal["pad", "squash", "crop"] = "pad"
    crop_pct: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resize_image(img: Image.Image, cfg: PreprocessCfg) -> Image.Image:
    h, w = cfg.size
    interp = _INTERP.get(cfg.interpolation, Image.BICUBIC)
    if cfg.resize == "squash":
        return img.resize((w, h), interp)
    if cfg.resize == "crop":
        scale = max(h, w) / cfg.crop_pct / min(img.size)
        img = img.resize((max(w, round(img.width * scale)), max(h, round(img.height * scale))), interp)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        return img.crop((left, top, left + w, top + h))
    scale = min(w / img.width, h / img.height)
    nw, nh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (w, h), (255, 255, 255))
    canvas.paste(img.resize((nw, nh), interp), ((w - nw) // 2, (h - nh) // 2))
    return canvas


def to_image(item: ImageLike, max_pixels: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item.convert("RGB") if item.mode != "RGB" else item
    return load_image(item, max_pixels=max_pixels)


def resize_to_array(img: Image.Image, cfg: PreprocessCfg) -> np.ndarray:
    """Default worker step: the resized image as uint8 (H, W, 3); normalisation happens on the batch."""
    return np.asarray(resize_image(img, cfg), dtype=np.uint8)


def normalise_batch(batch: np.ndarray, cfg: PreprocessCfg) -> np.ndarray:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) with the encoder's mean and std."""
    x = batch.astype(np.float32) / 255.0
    x = (x - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def prepare_one(item: ImageLike, fn: Any, max_pixels: int) -> tuple[bool, Any]:
    """Decode + ``fn``; returns (True, array) or (False, reason). Never raises, so one bad image
    cannot take a worker pool down."""
    try:
        return True, fn(to_image(item, max_pixels))
    except Exception as e:  # noqa: BLE001 - a bad image is reported, not fatal
        return False, f"{type(e).__name__}: {e}"
