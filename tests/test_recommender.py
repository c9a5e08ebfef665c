"""Recommender: precomputed vs live answers, filters and crowding with k kept, photo and example search."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.pipeline import build
from lookalike.recommend.filters import FilterSpec
from lookalike.recommender import Recommender, UnknownProductError


@pytest.fixture(scope="module")
def rec(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    ws = tmp_path_factory.mktemp("ws")
    build(tiny_catalogue, ws, encoder="color-texture", k=10, show_progress=False)
    return Recommender.open(ws)


def test_similar_serves_precomputed_lists(rec: Recommender) -> None:
    items = rec.similar("p0000", k=5)
    stored = rec.store.get_similar("color-texture", "p0000")[:5]
    assert [i.product.id for i in items] == [r.similar_id for r in stored]
    assert [i.similarity_pct for i in items] == pytest.approx([r.similarity_pct for r in stored], abs=0.051)


def test_live_search_equals_precomputed_order(rec: Recommender) -> None:
    # k larger than the stored lists forces a live search; its head must agree with the stored list
    live = rec.similar("p0000", k=30)
    assert len(live) == 30
    assert [i.product.id for i in live[:10]] == [i.product.id for i in rec.similar("p0000", k=10)]


def test_filters_keep_k(rec: Recommender) -> None:
    items = rec.similar("p0000", k=12, filters=FilterSpec.parse(["colour:Blue"], ["gender:Men"]))
    assert len(items) == 12
    assert all(i.product.attributes["colour"] == "Blue" and i.product.attributes["gender"] != "Men" for i in items)


def test_crowding_keeps_k(rec: Recommender) -> None:
    items = rec.similar("p0000", k=8, filters=FilterSpec.parse(max_per=["colour:2"]))
    assert len(items) == 8
    colours = [i.product.attributes["colour"] for i in items]
    assert max(colours.count(c) for c in set(colours)) <= 2


def test_same_category(rec: Recommender) -> None:
    cat = rec.product("p0001").category
    items = rec.similar("p0001", k=20, same_category=True)
    assert len(items) == 20 and {i.product.category for i in items} == {cat}


def test_unknown_product(rec: Recommender) -> None:
    with pytest.raises(UnknownProductError, match="no product with id 'nope'"):
        rec.similar("nope")


def test_photo_search_finds_the_product(rec: Recommender) -> None:
    img = Image.open(rec.image_path("p0007")).convert("RGB")
    res = rec.search(img, k=3, route="none")
    assert res.items[0].product.id == "p0007" and res.items[0].similarity_pct == 100.0
    assert res.predicted_category is None  # color-texture cannot predict categories
    res = rec.search(img, k=4, category="circle")
    assert {i.product.category for i in res.items} == {"circle"}
    with pytest.raises(ValueError, match="route must be"):
        rec.search(img, route="sideways")


def test_search_by_ids(rec: Recommender) -> None:
    items = rec.search_by_ids(["p0000", "p0020"], ["p0004"], k=5)
    assert len(items) == 5 and not {"p0000", "p0020", "p0004"} & {i.product.id for i in items}
    with pytest.raises(UnknownProductError):
        rec.search_by_ids(["zzz"])


def test_routing_rules(rec: Recommender) -> None:
    assert rec.route(None) is None
    assert rec.route([("Shirts", 0.9), ("Tshirts", 0.05)]) == ["Shirts"]
    assert rec.route([("Shirts", 0.3), ("Tshirts", 0.25), ("Tops", 0.1)]) == ["Shirts", "Tshirts", "Tops"]
    assert rec.route([("Shirts", 0.2), ("Tshirts", 0.1), ("Tops", 0.1)]) is None


def test_image_path_stays_inside_catalogue(rec: Recommender) -> None:
    p = rec.image_path("p0003")
    assert p is not None and p.is_file()
    assert rec.image_path("../../etc/passwd") is None
    assert np.isfinite(rec.vectors).all()


def test_scores_are_rounded_like_round(rec: Recommender) -> None:
    from lookalike.recommender import _round

    rng = np.random.default_rng(0)
    for x in rng.uniform(-1, 1, 200).astype(np.float32).tolist():
        assert _round(x, 1e6) == pytest.approx(round(x, 6), abs=1e-12)  # only exact decimal ties could differ
    assert _round(float("inf"), 1e6) == float("inf") and _round(float("-inf"), 10.0) == float("-inf")
    items = rec.similar(rec.ids[0], k=5)
    assert all(it.score == round(it.score, 6) and it.similarity_pct == round(it.similarity_pct, 1) for it in items)
