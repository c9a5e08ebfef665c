"""A small generated catalogue (coloured shapes on white), for tests and for ``make demo`` when the
shared fashion catalogue is not there."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

COLOURS = {"Red": (210, 40, 40), "Blue": (40, 70, 200), "Green": (40, 160, 60), "Black": (30, 30, 30),
           "Yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle", "stripe")


def draw_product(shape: str, colour: tuple[int, int, int], rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One product photo: a shape of a colour, jittered in place, size and shade, on a white background."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    c = tuple(int(np.clip(v + rng.integers(-20, 21), 0, 255)) for v in colour)
    r = size * rng.uniform(0.28, 0.4)
    cx, cy = size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-4, 4)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=c)
    elif shape == "triangle":
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        d.polygon(pts, fill=c)
    else:
        for x in range(int(cx - r), int(cx + r), 8):
            d.rectangle([x, cy - r, x + 3, cy + r], fill=c)
    return img


def make_catalogue(folder: Path, n: int = 120, seed: int = 0) -> Path:
    """Write ``folder/catalogue.csv`` and ``folder/images/*.png``; returns the CSV path.

    Columns: id, title, category (the shape), image, colour, gender, price.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        colour = list(COLOURS)[(i // len(SHAPES)) % len(COLOURS)]
        pid = f"p{i:04d}"
        draw_product(shape, COLOURS[colour], rng).save(folder / "images" / f"{pid}.png")
        rows.append({"id": pid, "title": f"{colour} {shape} {i}", "category": shape, "image": f"images/{pid}.png",
                     "colour": colour, "gender": ("Women", "Men")[i % 2], "price": f"{10 + i % 7 * 5}"})
    path = folder / "catalogue.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    log.info("generated %d products in %s", n, folder)
    return path
