"""Goes-with: co-occurrence data, group-disjoint folds, recipes (learning shown), the servable model, the
feature extraction on generated images and a workspace fit."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lookalike.recommend.compat import LearnedRecipe
from lookalike.recommend.cooccurrence import CoOccurrence, TypeAffinity, group_folds
from lookalike.recommend.goes_with import GoesWith, UnknownCategoryError, create_recipe, list_recipes
from lookalike.recommend.goes_with_features import ItemFeatures, describe_items, tokens
from lookalike.recommend.goes_with_live import TrackedProducts


# ---- co-occurrence and folds -----------------------------------------------------------------------
def test_cooccurrence_csv_skips_bad_rows_and_finds_pairs(tmp_path: Path) -> None:
    p = tmp_path / "links.csv"
    p.write_text("item,group\nchair1,room1\ntable1,room1\nchair1,room1\n,room2\nchair2,room2\ntable2,room2\n"
                 "table1,room3\nchair2,\n")
    co = CoOccurrence.from_csv(p)
    assert co.skipped == 2
    assert len(co.links) == 5  # 7 good rows, one of them a duplicate, one with no group
    assert co.pairs({"chair1", "chair2"}, {"table1", "table2"}) == [("chair1", "table1"), ("chair2", "table2")]
    assert co.without_groups({"room1"}).pairs({"chair1"}, {"table1"}) == []
    assert co.groups_of("table1") == {"room1", "room3"}
    with pytest.raises(ValueError, match="no column"):
        CoOccurrence.from_csv(p, item="product_id")


def test_group_folds_are_group_disjoint() -> None:
    # 3 chairs per room; every 10th chair is in the next room too, which joins those rooms into one component
    links = [(f"c{i}", f"r{i // 3}") for i in range(60)]
    links += [(f"c{i}", f"r{i // 3 + 1}") for i in range(0, 60, 10)]
    links += [(f"t{i}", f"r{i % 20}") for i in range(40)]
    co = CoOccurrence(links)
    test_items = [f"c{i}" for i in range(60)]
    folds = group_folds(test_items, co, n_folds=5, seed=1)
    assert len(folds) == 5
    assert sorted(i for f, _ in folds for i in f) == sorted(test_items)  # every item tested exactly once
    for test, held in folds:
        train = co.without_groups(held)
        assert not (train.groups & held)
        for it in test:  # not one link of a test item is left for training
            assert not train.groups_of(it)
    sizes = [len(f) for f, _ in folds]
    assert max(sizes) - min(sizes) <= 6  # components hold at most 6 chairs: folds stay balanced
    joined = next(f for f, _ in folds if "c0" in f)
    assert {"c0", "c1", "c2", "c3", "c4", "c5"} <= set(joined)  # chairs linked through a room share a fold


# ---- channels and fixed recipes --------------------------------------------------------------------
def _feats(n_src: int = 0) -> ItemFeatures:
    # a chair and three tables: gram says table A, colour says table B, the title says table C
    gram = np.asarray([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32)
    colour = np.asarray([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    titles = [tokens("EKEDALEN chair"), tokens("LACK table"), tokens("NORDEN table"), tokens("EKEDALEN table")]
    return ItemFeatures(["chair", "A", "B", "C"], ["chair", "table", "table", "table"],
                        {"gram0": gram, "colour": colour}, {"title": titles})


def test_channel_scores_are_cosines_and_jaccards() -> None:
    f = _feats()
    ch = f.channel_scores(np.asarray([0]), np.asarray([1, 2, 3]))
    assert f.channels == ["visual:colour", "visual:gram0", "text:title"]
    np.testing.assert_allclose(ch[0, :, 0], [0, 1, 0])  # colour
    np.testing.assert_allclose(ch[0, :, 1], [1, 0, 0])  # gram
    np.testing.assert_allclose(ch[0, :, 2], [0, 0, 1 / 3], rtol=1e-6)  # {ekedalen, chair} vs {ekedalen, table}


def test_fixed_recipes_read_their_own_channels() -> None:
    f = _feats()
    model = GoesWith(f, create_recipe("style"))
    assert [h.product_id for h in model.query("chair", "table", k=1)] == ["A"]
    assert [h.product_id for h in model.query("chair", "table", k=1, recipe=create_recipe("colour"))] == ["B"]
    hits = model.query("chair", "table", k=3)
    assert [h.pct for h in hits] == [100.0, 50.0, 0.0]
    with pytest.raises(UnknownCategoryError, match="valid categories: chair, table"):
        model.query("chair", "sofa")
    with pytest.raises(ValueError, match="Valid goes-with recipes"):
        create_recipe("magic")
    assert {"style", "colour", "combined", "learned"} <= set(list_recipes())


# ---- learning --------------------------------------------------------------------------------------
def _synthetic(n_pairs: int = 120, seed: int = 0) -> tuple[ItemFeatures, CoOccurrence, list[str]]:
    """Chairs and tables; the partner of a chair shares its 'key' block (weakly), while two louder noise
    blocks are unrelated. Equal weights drown the key; learned weights should find it."""
    rng = np.random.default_rng(seed)
    d = 16
    key_c = rng.standard_normal((n_pairs, d))
    key_t = key_c + 1.2 * rng.standard_normal((n_pairs, d))
    blocks = {}
    for name in ("key", "noise1", "noise2"):
        blocks[name] = np.concatenate([key_c, key_t]) if name == "key" else rng.standard_normal((2 * n_pairs, d))
    blocks = {k: (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) for k, v in blocks.items()}
    ids = [f"c{i}" for i in range(n_pairs)] + [f"t{i}" for i in range(n_pairs)]
    cats: list[str | None] = ["chair"] * n_pairs + ["table"] * n_pairs
    co = CoOccurrence([(f"c{i}", f"room{i}") for i in range(n_pairs)] + [(f"t{i}", f"room{i}") for i in range(n_pairs)])
    return ItemFeatures(ids, cats, blocks), co, [f"c{i}" for i in range(n_pairs)]


def _mean_rank(model: GoesWith, chairs: list[str]) -> float:
    ranks = []
    for c in chairs:
        hits = [h.product_id for h in model.query(c, "table", k=1000)]
        ranks.append(hits.index("t" + c[1:]))
    return float(np.mean(ranks))


def test_learned_ranks_cooccurring_pairs_higher_after_training() -> None:
    feats, co, chairs = _synthetic()
    folds = group_folds(chairs, co, n_folds=2, seed=0)
    test, held = folds[0]
    before = _mean_rank(GoesWith(feats, create_recipe("combined")), test)
    learned = create_recipe("learned")
    learned.fit(feats, co.without_groups(held))  # trained on the other fold's rooms only
    after = _mean_rank(GoesWith(feats, learned), test)
    assert isinstance(learned, LearnedRecipe)
    w = learned.describe_weights("chair", "table")
    assert w["visual:key"] > 3 * max(abs(w["visual:noise1"]), abs(w["visual:noise2"]))
    assert after < 0.6 * before, (before, after)


def test_learned_needs_links_and_saves_its_weights(tmp_path: Path) -> None:
    feats, co, _ = _synthetic(40)
    rec = create_recipe("learned", min_pairs=10)
    with pytest.raises(ValueError, match="co-occurrence"):
        rec.fit(feats, None)
    rec.fit(feats, co)
    model = GoesWith(feats, rec, {"note": "test"})
    model.save(tmp_path / "gw")
    again = GoesWith.load(tmp_path / "gw")
    assert again.recipe.name == "learned" and again.info == {"note": "test"}
    assert again.suggested_categories("c0") == ["table"]
    # features are stored as float16: the same ranking, scores equal to a few decimals
    a, b = model.query("c3", "table", k=10), again.query("c3", "table", k=10)
    assert [h.product_id for h in a][:3] == [h.product_id for h in b][:3]
    with pytest.raises(FileNotFoundError, match="--fit"):
        GoesWith.load(tmp_path / "nothing")


def test_with_items_replaces_adds_and_drops_rows() -> None:
    rng = np.random.default_rng(0)

    def feats(ids: list[str], cats: list[str]) -> ItemFeatures:
        vis = rng.normal(size=(len(ids), 4)).astype(np.float32)
        return ItemFeatures(ids, list(cats), {"colour": vis / np.linalg.norm(vis, axis=1, keepdims=True)},
                            {"title": [tokens(i) for i in ids]})

    model = GoesWith(feats(["a", "b", "t1", "t2"], ["chair", "chair", "table", "table"]), create_recipe("colour"),
                     image_hashes=["ha", "hb", "h1", "h2"])
    new = feats(["b", "t3"], ["table", "table"])  # b changed category, t3 is new
    out = model.with_items(new, {"t1"}, ["hb2", "h3"])
    assert out.feats.ids == ["a", "t2", "b", "t3"] and out.image_hashes == ["ha", "h2", "hb2", "h3"]
    assert sorted(h.product_id for h in out.query("a", "table", k=10)) == ["b", "t2", "t3"]
    np.testing.assert_array_equal(out.feats.visual["colour"][2:], new.visual["colour"])
    assert model.feats.ids == ["a", "b", "t1", "t2"]  # the old model is untouched (readers may hold it)
    with pytest.raises(ValueError, match="channels"):
        model.with_items(ItemFeatures(["x"], ["table"], {"vectors": np.ones((1, 2), np.float32)}), set(), [None])


def test_tracked_products_remember_what_changed() -> None:
    d = TrackedProducts({"a": 1, "b": 2})
    assert d.drain() == set()
    d["c"] = 3
    d.pop("a")
    del d["b"]
    d.pop("missing", None)
    assert d.drain() == {"a", "b", "c", "missing"} and d == {"c": 3}
    assert d.drain() == set()


def test_type_affinity_by_hand() -> None:
    # 4 rooms: outdoor chair + outdoor table twice, indoor chair + dining table, and a dining table alone
    co = CoOccurrence([("oc1", "r1"), ("ot1", "r1"), ("oc2", "r2"), ("ot1", "r2"), ("ic", "r3"), ("dt", "r3"),
                       ("dt", "r4"), ("vase", "r4")])
    types = {"oc1": "Chair, outdoor", "oc2": "Chair, outdoor", "ot1": "Table, outdoor", "ic": "Chair",
             "dt": "Table"}  # the vase has no known type: its room still counts, as a room with a table
    aff = TypeAffinity.fit(types, co)
    assert aff.groups == 4 and aff.count == {"Chair, outdoor": 2, "Table, outdoor": 2, "Chair": 1, "Table": 2}
    assert aff.score("Chair, outdoor", "Table, outdoor") == pytest.approx(np.log(3 / (2 * 2 / 4 + 1)))
    assert aff.score("Chair, outdoor", "Table") == pytest.approx(np.log(1 / (2 * 2 / 4 + 1)))
    assert aff.score("Chair", "Table") == pytest.approx(np.log(2 / (1 * 2 / 4 + 1)))
    assert aff.score("Sofa", "Table") == 0.0 and aff.score(None, "Table") == 0.0
    np.testing.assert_allclose(aff.matrix(["Chair, outdoor"], ["Table, outdoor", "Table"])[0],
                               [aff.score("Chair, outdoor", "Table, outdoor"), aff.score("Chair, outdoor", "Table")])
    assert TypeAffinity.from_state(json.loads(json.dumps(aff.state()))) == aff


def test_fitted_recipes_rank_by_type_when_nothing_else_tells() -> None:
    """Colour and titles say nothing here; which table types share rooms with which chair types does."""
    rng = np.random.default_rng(0)
    n = 40
    kinds = [("Chair, outdoor", "Table, outdoor"), ("Armchair", "Coffee table")]
    ids, cats, types, links = [], [], [], []
    for i in range(n):
        ck, tk = kinds[i % 2]
        ids += [f"c{i}", f"t{i}"]
        cats += ["chair", "table"]
        types += [ck, tk]
        links += [(f"c{i}", f"room{i}"), (f"t{i}", f"room{i}")]
    vis = rng.standard_normal((2 * n, 8)).astype(np.float32)
    feats = ItemFeatures(ids, cats, {"colour": vis / np.linalg.norm(vis, axis=1, keepdims=True)}, {}, {}, types)
    co = CoOccurrence(links)
    chairs = [f"c{i}" for i in range(n)]
    (test, held), _ = group_folds(chairs, co, n_folds=2, seed=0)

    def type_share(model: GoesWith) -> float:  # share of each test chair's top 5 of its partner type
        return float(np.mean([types[ids.index(h.product_id)] == kinds[int(c[1:]) % 2][1]
                              for c in test for h in model.query(c, "table", k=5)]))

    plain = GoesWith(feats, create_recipe("combined"))
    assert plain.recipe.channel_names(feats) == ["visual:colour"]  # no links: no type channel
    for name in ("combined", "learned"):
        rec = create_recipe(name)
        rec.fit(feats, co.without_groups(held))
        assert rec.channel_names(feats) == ["visual:colour", "type"]
        assert type_share(GoesWith(feats, rec)) > 0.9, name
    assert type_share(plain) < 0.7  # about half: two table types, picked at random


def test_a_saved_model_keeps_its_types_and_affinity(tmp_path: Path) -> None:
    feats = ItemFeatures(["c", "t1", "t2"], ["chair", "table", "table"],
                         {"colour": np.eye(3, dtype=np.float32)}, {}, {}, ["Chair, outdoor", "Table, outdoor", "Table"])
    rec = create_recipe("combined")
    rec.fit(feats, CoOccurrence([("c", "r1"), ("t1", "r1"), ("t2", "r2")]))
    GoesWith(feats, rec).save(tmp_path / "gw")
    again = GoesWith.load(tmp_path / "gw")
    assert again.feats.types == feats.types and again.recipe.affinity == rec.affinity
    assert [h.product_id for h in again.query("c", "table", k=2)] == ["t1", "t2"]
    assert "type" in json.loads(again.describe())["channels"]


# ---- features on generated images ------------------------------------------------------------------
def test_describe_items_on_generated_images(tmp_path: Path) -> None:
    # hues in the middle of their histogram bins, so no jitter can push a colour into the next bin
    colours = {"Red": (200, 60, 30), "Blue": (50, 50, 200), "Green": (40, 180, 40)}
    paths, ids, cats = [], [], []
    for shape, cat in (("square", "chair"), ("circle", "table")):
        for colour in ("Red", "Blue", "Green"):
            p = tmp_path / f"{cat}-{colour}.png"
            img = Image.new("RGB", (96, 96), "white")
            draw = ImageDraw.Draw(img)
            (draw.rectangle if shape == "square" else draw.ellipse)([20, 20, 76, 76], fill=colours[colour])
            img.save(p)
            paths.append(p)
            ids.append(f"{cat}-{colour}")
            cats.append(cat)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    feats, failed = describe_items(ids + ["broken"], cats + ["table"], paths + [tmp_path / "broken.png"],
                                   {"title": [i.replace("-", " ") for i in ids] + ["x"]}, pretrained=False)
    assert failed == ["broken"]
    assert feats.ids == ids
    assert {"visual:colour", "visual:gram0", "text:title"} <= set(feats.channels)
    # random weights are seeded: "no weights" features (and benchmark figures) are the same on every run
    again, _ = describe_items(ids[:2], cats[:2], paths[:2], pretrained=False)
    np.testing.assert_array_equal(again.visual["gram1"], feats.visual["gram1"][:2])
    model = GoesWith(feats, create_recipe("colour"))
    for colour in ("Red", "Blue", "Green"):  # the colour recipe pairs each chair with its own colour's table
        assert model.query(f"chair-{colour}", "table", k=1)[0].product_id == f"table-{colour}"


# ---- a workspace fit -------------------------------------------------------------------------------
def test_fit_workspace_and_recommender(tmp_path: Path, tiny_catalogue: Path) -> None:
    from lookalike.pipeline import build
    from lookalike.recommend.goes_with import fit_workspace
    from lookalike.recommender import Recommender, UnknownProductError

    ws = tmp_path / "ws"
    build(tiny_catalogue, ws, encoder="color-texture", limit=40, show_progress=False, num_workers=0)
    rows = list(csv.DictReader(tiny_catalogue.open()))[:40]
    links = tmp_path / "outfits.csv"
    with links.open("w", newline="") as f:  # an "outfit" per colour: shapes of one colour go together
        w = csv.writer(f)
        w.writerow(["sku", "outfit"])
        for r in rows:
            w.writerow([r["id"], f"{r['colour']}-{int(r['id'][1:]) // 20}"])
        w.writerow(["unknown-product", "x"])
    rec0 = Recommender.open(ws, load_encoder=False)
    before = rec0.goes_with("p0000", "circle", k=3)  # no fit yet: build vectors + tokens
    assert len(before) == 3 and all(r.product.category == "circle" for r in before)
    with pytest.raises(UnknownProductError):
        rec0.goes_with("nope", "circle")
    with pytest.raises(ValueError, match="--links"):
        fit_workspace(ws, "learned", None)
    # no CNN here (colour and text channels): the CNN path is covered by test_describe_items_on_generated_images
    model = fit_workspace(ws, "learned", links, item_col="sku", group_col="outfit", cnn=False,
                          show_progress=False, num_workers=0)
    assert model.info["links_matched"] == 40 and model.info["links_skipped"] == 1
    rec = Recommender.open(ws, load_encoder=False)
    hits = rec.goes_with("p0000", "circle", k=3)
    assert rec.goes_with_model().recipe.name == "learned"
    colour = rows[0]["colour"]
    assert hits[0].product.attributes.get("colour") == colour
    with pytest.raises(UnknownCategoryError):
        rec.goes_with("p0000", "hexagon")
    # a product type finer than the category, from an attribute: one more channel, learned from the links
    with pytest.raises(ValueError, match="no product has the attribute 'kind'; the attributes are: .*colour"):
        fit_workspace(ws, "combined", links, item_col="sku", group_col="outfit", cnn=False, show_progress=False,
                      num_workers=0, type_attribute="kind")
    typed = fit_workspace(ws, "combined", links, item_col="sku", group_col="outfit", cnn=False,
                          show_progress=False, num_workers=0, type_attribute="colour")
    assert typed.recipe.channel_names(typed.feats)[-1] == "type" and typed.info["type_attribute"] == "colour"
    hits = Recommender.open(ws, load_encoder=False).goes_with("p0001", "circle", k=2)
    assert [h.product.attributes.get("colour") for h in hits] == [rows[1]["colour"]] * 2  # single-colour outfits
