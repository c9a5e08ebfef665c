"""The photo-search category router: fitting on pooled features or logits, persistence, and routing inside the
Recommender."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.pipeline import build
from lookalike.recommend.router import (
    CategoryRouter,
    Restager,
    _sample,
    fit_logistic,
    fit_router,
    load_router,
)
from lookalike.recommender import Recommender


def test_router_learns_a_linear_map_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 20))
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(0, 1, (300, 20))
    names = ["Shirts", "Shoes", "Watches"]
    classes, coef, intercept = fit_logistic(x[:200], [names[i] for i in y[:200]], c=0.1)
    router = CategoryRouter("timm:test_efficientnet", {"pretrained": False}, classes, coef, intercept, 0.4, "pooled")
    preds = router.predict_inputs(x[200:], top=2)
    assert all(len(p) == 2 and p[0][1] >= p[1][1] for p in preds)
    assert np.mean([p[0][0] == names[i] for p, i in zip(preds, y[200:])]) > 0.95
    router.save(tmp_path)
    again = CategoryRouter.load(tmp_path)
    assert again.classes == classes and again.route_threshold == 0.4 and again.features == "pooled"
    assert [p[0][0] for p in again.predict_inputs(x[200:])] == [p[0][0] for p in preds]
    two = y[:200] < 2  # two categories: sklearn's binary form must still give one probability per category
    classes, coef, intercept = fit_logistic(x[:200][two], [names[i] for i in y[:200][two]], c=0.1)
    binary = CategoryRouter("timm:test_efficientnet", {}, classes, coef, intercept, 0.5)
    got = binary.predict_inputs(x[200:][y[200:] < 2], top=2)
    assert all(len(p) == 2 and p[0][1] + p[1][1] == pytest.approx(1.0) for p in got)
    assert np.mean([p[0][0] == names[i] for p, i in zip(got, y[200:][y[200:] < 2])]) > 0.95
    with pytest.raises(FileNotFoundError, match="fit-router"):
        CategoryRouter.load(tmp_path / "none")


def test_standardising_is_folded_into_weights_that_act_on_raw_features() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = rng.normal(0, 1, (300, 8)) + np.eye(3, 8)[y] * 2
    x = x * np.array([1e3, 1, 1e-3, 1, 50, 1, 1, 1]) + 7.0  # columns on very different scales, off-centre
    labels = [str(v) for v in y]
    classes, coef, intercept = fit_logistic(x, labels, c=0.1, standardise=True)
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(C=0.1, max_iter=2000).fit(scaler.transform(x), labels)
    assert classes == list(ref.classes_)
    np.testing.assert_allclose(x @ coef.T + intercept, ref.decision_function(scaler.transform(x)), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def ws(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws-router")
    build(tiny_catalogue, ws, encoder="color-texture", k=10, show_progress=False)
    return ws


def test_fit_router_then_search_routes_with_it(ws: Path) -> None:
    assert load_router(ws) is None
    r = fit_router(ws, encoder="timm:test_efficientnet", image_size=64, sample=120, held_out=0.25,
                   show_progress=False, pretrained=False)
    assert sorted(r.classes) == ["circle", "square", "stripe", "triangle"]
    assert r.info["products"] == 120 and r.info["held_out"] > 0 and 0.05 <= r.route_threshold <= 0.95
    assert r.info["shopper_views"] == 1 and r.info["calibrated_on"] == "re-staged held-out products"
    assert r.features == "pooled" and r.coef.shape[1] == r.encoder.dim
    assert 0.0 <= r.info["held_out_accuracy_restaged"] <= 1.0
    rec = Recommender.open(ws)
    assert rec.router is not None and rec.route_threshold() == pytest.approx(r.route_threshold)
    img = Image.open(rec.image_path("p0007")).convert("RGB")
    res = rec.search(img, k=4, route="auto")
    assert res.predicted_category is not None and res.predicted_category[0] in r.classes
    if res.searched_categories:  # routed: every result is in the categories it searched
        assert {i.product.category for i in res.items} <= set(res.searched_categories)
    assert rec.search(img, k=4, route="none").predicted_category is None


def test_the_sample_is_topped_up_for_small_categories() -> None:
    from types import SimpleNamespace

    rows = [SimpleNamespace(category=c) for c in ["Tshirts"] * 990 + ["Blazers"] * 8 + ["Suits"] * 2]
    got = _sample(rows, 100, min_count=5, per_category=20, rng=np.random.default_rng(0))
    cats = [rows[i].category for i in got]
    assert got == sorted(set(got)) and cats.count("Blazers") == 8  # all 8, where 100 random ones hold ~1
    assert cats.count("Suits") == sum(1 for i in got if i >= 998)  # too few to route to: never topped up
    assert 100 <= len(got) <= 110


def test_restager_takes_studio_shots_off_white_deterministically() -> None:
    shots = np.full((16, 64, 64, 3), 255, np.uint8)
    shots[:, 16:48, 20:44] = (200, 30, 30)  # a red product on studio white

    def white(x: np.ndarray) -> float:
        return float((x.min(axis=3) >= 250).mean())

    a, b = Restager(seed=3)(shots), Restager(seed=3)(shots)
    assert a.shape == shots.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert white(a) < 0.5 * white(shots)  # most shots now stand on a texture, not on white
    assert not np.array_equal(a, Restager(seed=4)(shots))


def test_fit_router_on_studio_shots_only(ws: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    r = fit_router(copy, encoder="timm:test_efficientnet", image_size=64, sample=120, held_out=0.25,
                   shopper_views=0, features="logits", show_progress=False, pretrained=False)
    assert r.info["calibrated_on"] == "held-out studio shots" and r.info["held_out_accuracy_restaged"] is None
    assert r.coef.shape[1] == r.encoder.model.num_classes  # type: ignore[attr-defined]
    again = load_router(copy)
    assert again is not None and again.info["shopper_views"] == 0 and again.features == "logits"
    with pytest.raises(ValueError, match="pooled, logits"):
        fit_router(copy, encoder="timm:test_efficientnet", image_size=64, sample=120, features="pixels",
                   show_progress=False, pretrained=False)


class _PredictingEncoder:
    """The workspace's encoder plus a fixed category distribution, standing in for a trained model's head."""

    def __init__(self, enc: object, dist: list[tuple[str, float]]) -> None:
        self.enc, self.dist = enc, dist

    def encode(self, images: list, **kwargs: object) -> np.ndarray:  # type: ignore[type-arg]
        return self.enc.encode(images, **kwargs)  # type: ignore[attr-defined]

    def encode_and_predict(self, images: list, top: int = 3) -> tuple[np.ndarray, list]:  # type: ignore[type-arg]
        return self.encode(images, show_progress=False, num_workers=0), [self.dist[:top]]


def test_search_routes_by_the_router_not_the_encoders_own_guess(ws: Path) -> None:
    if load_router(ws) is None:
        fit_router(ws, encoder="timm:test_efficientnet", image_size=64, sample=120, held_out=0.25,
                   show_progress=False, pretrained=False)
    rec = Recommender.open(ws)
    img = Image.open(rec.image_path("p0007")).convert("RGB")
    assert rec.router is not None
    routed = rec.router.predict([img], top=10)[0]
    own = [("triangle", 0.5), ("square", 0.3), ("circle", 0.15), ("stripe", 0.05)]
    rec._encoder = _PredictingEncoder(rec.encoder, own)  # type: ignore[assignment]
    res = rec.search(img, k=4, route="auto")
    assert res.predicted_category == pytest.approx(routed[0])
    rec.router = None  # without a router, the encoder's own guess routes
    assert rec.search(img, k=4, route="auto").predicted_category == pytest.approx(own[0])
