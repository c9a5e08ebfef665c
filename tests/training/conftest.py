"""Fixtures for the training tests: a tiny generated catalogue of 4 classes (one shape and one colour each)
and a classifier trained on it once per session."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lookalike.demo import COLOURS, draw_product

CLASSES = (("circle", "Red"), ("square", "Blue"), ("triangle", "Green"), ("stripe", "Yellow"))


def make_shapes_catalogue(folder: Path, per_class: int = 30, size: int = 32, seed: int = 0,
                          rare: int = 0) -> Path:
    """``folder/catalogue.csv`` + images: ``per_class`` products per class, plus ``rare`` products of a
    fifth class (black circles) meant to fall under min_count."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    spec = [(s, c) for s, c in CLASSES for _ in range(per_class)] + [("circle", "Black")] * rare
    for i, (shape, colour) in enumerate(spec):
        pid = f"p{i:04d}"
        draw_product(shape, COLOURS[colour], rng, size=size).save(folder / "images" / f"{pid}.png")
        rows.append({"id": pid, "title": f"{colour} {shape}", "category": f"{shape}-{colour}".lower(),
                     "image": f"images/{pid}.png", "colour": colour})
    path = folder / "catalogue.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def shapes_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_catalogue(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def trained_classifier(shapes_catalogue: Path, tmp_path_factory: pytest.TempPathFactory):
    from lookalike.training import train

    ws = tmp_path_factory.mktemp("ws-classifier")
    return train(shapes_catalogue, ws, label="category", epochs=6, image_size=32, batch_size=32, lr=5e-3,
                 min_count=5, show_progress=False)
