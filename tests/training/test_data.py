from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.encoders.prep import PreprocessCfg
from lookalike.store.sql import ProductRow
from lookalike.training.data import OTHER, LabelMap, label_of, split_validation
from lookalike.training.trainer import image_shape


def test_rare_labels_are_grouped_into_other() -> None:
    raw = ["shirt"] * 30 + ["shoe"] * 25 + ["hat"] * 3 + ["scarf"] * 2 + [None] * 4
    lm = LabelMap.build(raw, min_count=20)
    assert lm.classes == ["shirt", "shoe", OTHER]
    assert lm.rare == ["hat", "scarf"]
    codes = lm.encode(["shirt", "hat", "scarf", None, "never-seen"])
    assert codes.tolist() == [0, 2, 2, -1, -1]
    again = LabelMap.from_dict(lm.to_dict())
    assert again.classes == lm.classes and again.encode(["scarf"]).tolist() == [2]


def test_no_other_class_when_nothing_is_rare() -> None:
    lm = LabelMap.build(["a"] * 5 + ["b"] * 5, min_count=5)
    assert lm.classes == ["a", "b"] and lm.rare == []


def test_too_few_classes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        LabelMap.build(["a"] * 50 + ["b"] * 3, min_count=20)


def test_label_lookup_category_or_attribute() -> None:
    row = ProductRow("1", category="Shirts", attributes={"gender": "Men", "usage": " ", "year": 2012})
    assert label_of(row, "category", None) == "Shirts"
    assert label_of(row, "articleType", "articleType") == "Shirts"  # the mapped source column
    assert label_of(row, "gender", "articleType") == "Men"
    assert label_of(row, "usage", "articleType") is None  # blank counts as missing
    assert label_of(row, "year", "articleType") == "2012"
    assert label_of(row, "season", "articleType") is None


def test_split_is_product_disjoint_seeded_and_keeps_duplicates_together() -> None:
    n = 1000
    ids = [f"p{i}" for i in range(n)]
    # every 10th product shares its image with the next one
    hashes = [f"h{i - 1}" if i % 10 == 1 else f"h{i}" for i in range(n)]
    val = split_validation(ids, hashes, 0.1, seed=3)
    assert 95 <= val.sum() <= 110
    assert np.array_equal(val, split_validation(ids, hashes, 0.1, seed=3))
    assert not np.array_equal(val, split_validation(ids, hashes, 0.1, seed=4))
    for i in range(0, n, 10):
        assert val[i] == val[i + 1]  # same image -> same side
    none_hash = split_validation(ids, [None] * n, 0.1, seed=0)
    assert none_hash.sum() == 100


def test_image_shape_follows_the_catalogue_aspect(tmp_path: Path) -> None:
    portrait = []
    for i in range(5):
        p = tmp_path / f"p{i}.jpg"
        Image.new("RGB", (60, 80), "white").save(p)
        portrait.append(p)
    assert image_shape(portrait, 64) == (64, 48)
    square = tmp_path / "sq.png"
    Image.new("RGB", (50, 50)).save(square)
    assert image_shape([square], 32) == (32, 32)
    assert image_shape([tmp_path / "missing.jpg"], 32) == (32, 32)


def test_image_cache_skips_bad_images_and_is_reused(tmp_path: Path) -> None:
    from lookalike.catalogue import ingest
    from lookalike.training.data import load_images, read_products

    cat = tmp_path / "cat"
    (cat / "images").mkdir(parents=True)
    lines = ["id,title,category,image"]
    for i in range(6):
        Image.new("RGB", (30, 40), (40 * i, 0, 0)).save(cat / "images" / f"{i}.png")
        lines.append(f"{i},t,c{i % 2},images/{i}.png")
    (cat / "catalogue.csv").write_text("\n".join(lines) + "\n")
    ws = tmp_path / "ws"
    ingest(cat / "catalogue.csv", ws, show_progress=False)
    (cat / "images" / "3.png").write_bytes(b"not an image any more")  # broken after ingest
    cfg = PreprocessCfg(size=(16, 12))
    rows = read_products(ws)
    first = load_images(ws, ws, rows, cfg, show_progress=False)
    assert len(first.ids) == 5 and "3" in first.errors
    assert first.pixels.shape == (5, 16, 12, 3) and first.pixels.dtype == np.uint8
    (cat / "images" / "0.png").unlink()  # a cache hit needs no file
    second = load_images(ws, ws, rows, cfg, show_progress=False)
    assert second.ids == first.ids and np.array_equal(second.pixels, first.pixels)
