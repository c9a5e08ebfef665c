"""Integration on the real shared data: a few thousand fashion products and the IKEA manifest."""
import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.pipeline import build
from lookalike.recommend.filters import FilterSpec
from lookalike.recommender import Recommender
from lookalike.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion_ws(datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("fashion")
    build(datasets / "fashion-product-images-small", ws, encoder="color-texture", limit=3000, k=10,
          show_progress=False)
    return ws


def test_fashion_build_reports_missing_and_fills_every_list(fashion_ws: Path) -> None:
    info = json.loads((fashion_ws / "build.json").read_text())
    report = json.loads((fashion_ws / "reports" / "validation.json").read_text())
    missing = info["problems"]["missing_image"]
    assert missing > 0 and report["counts"]["missing_image"] == missing  # the first 3,000 rows have gaps too
    assert info["counts"]["products"] == 3000 - missing
    store = Store.for_workspace(fashion_ws)
    assert store.count_similar_sources("color-texture") == info["counts"]["products"]


def test_fashion_similar_lists_are_mostly_the_same_article_type(fashion_ws: Path) -> None:
    rec = Recommender.open(fashion_ws, load_encoder=False)
    cats = np.asarray([rec.products[i].category for i in rec.ids])
    hits = (cats[rec.pre_idx] == cats[:, None])[:, :10]
    # the weight-free descriptor's leave-one-out P@10 on 3k products: far above chance (~0.1)
    assert hits.mean() > 0.45


def test_fashion_filters_and_live_search(fashion_ws: Path) -> None:
    rec = Recommender.open(fashion_ws, load_encoder=False)
    pid = rec.ids[0]
    items = rec.similar(pid, k=10, filters=FilterSpec.parse(["gender:Women"], max_per=["baseColour:1"]))
    assert len(items) == 10
    assert {i.product.attributes.get("gender") for i in items} == {"Women"}
    colours = [i.product.attributes.get("baseColour") for i in items]
    assert len(colours) == len(set(colours))


def test_ikea_manifest_builds(datasets: Path, tmp_path: Path) -> None:
    res = build(datasets / "ikea" / "manifest.csv", tmp_path, encoder="color-texture", limit=300, k=5,
                show_progress=False)
    assert res.counts["products"] == 300 and res.counts["with_similar"] == 300
    rec = Recommender.open(tmp_path, load_encoder=False)
    assert rec.image_path(rec.ids[0]).is_relative_to((datasets / "ikea").resolve())
