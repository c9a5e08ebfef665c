import json

import numpy as np
import pytest

from lookalike.recommend.similarity_pct import SimilarityScale


def _unit(a):
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _random(n, d, seed):
    return _unit(np.random.default_rng(seed).standard_normal((n, d)))


def _clustered(n, d, seed, clusters=20, spread=0.6):
    """An encoder whose space is lumpy: products gather around category centres, scores skew high."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)) + 3.0  # a shared offset, like a real embedding's mean
    return _unit(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d)))


def _pairs(X):
    S = X @ X.T
    return S[np.triu(np.ones(S.shape, bool), 1)]


@pytest.fixture(scope="module")
def scale():
    return SimilarityScale.fit(_random(5000, 32, 0), sample=1200, seed=0)


def test_monotonic_bounded_and_anchored(scale):
    grid = np.linspace(-1.2, 1.2, 20001)
    p = scale.pct(grid)
    assert p.dtype == np.float32 and p.shape == grid.shape
    assert np.all(np.diff(p) >= 0)
    assert p.min() == 0.0 and p.max() == 100.0
    assert scale.pct(np.float32(1.0)) == 100.0 and scale.pct(0.9999999) == 100.0  # an identical image
    assert scale.pct(-np.inf) == 0.0
    assert np.all(np.diff(scale.log_tail(grid)) <= 0)
    assert np.allclose(p * 10, np.round(p * 10))  # rounded to 0.1


def test_median_random_pair_is_about_5_pct(scale):
    held_out = _pairs(_random(1500, 32, 1))
    assert abs(float(scale.pct(np.median(held_out))) - 5.0) < 1.0
    assert scale.num_pairs == 1200 * 1199 // 2


def test_same_rarity_gives_same_pct_across_encoders():
    a_fit, a_eval = _random(4000, 24, 2), _random(1500, 24, 3)
    b_all = _clustered(5500, 96, 4)
    b_fit, b_eval = b_all[:4000], b_all[4000:]
    sa = SimilarityScale.fit(a_fit, sample=1500, seed=0)
    sb = SimilarityScale.fit(b_fit, sample=1500, seed=0)
    pa, pb = _pairs(a_eval), _pairs(b_eval)
    assert np.median(pb) > np.median(pa) + 0.3  # raw cosines are not comparable between the two
    for tail in (0.5, 0.1, 1e-2, 1e-3):
        qa, qb = np.quantile(pa, 1 - tail), np.quantile(pb, 1 - tail)
        expected = 100 * np.log10(1 / tail) / 6
        assert abs(float(sa.pct(qa)) - expected) < 2.5, tail
        assert abs(float(sb.pct(qb)) - expected) < 2.5, tail


def test_identical_pairs_in_sample_still_leave_room_for_100():
    X = _random(600, 16, 5)
    X[300:400] = X[:100]  # many duplicate images
    s = SimilarityScale.fit(X, sample=600)
    assert s.info["identical_pairs_dropped"] == 100
    assert s.pct(1.0) == 100.0 and s.knot_scores[-2] < 1.0


def test_extrapolates_linearly_to_100_on_a_small_catalogue():
    s = SimilarityScale.fit(_random(200, 16, 6))          # 19,900 pairs: rarest measurable 1 in 19,900
    top, top_pct = s.knot_scores[-2], float(s.pct(s.knot_scores[-2]))
    assert top_pct < 100
    mid = (top + 1.0) / 2
    assert abs(float(s.pct(mid)) - (top_pct + 100) / 2) <= 0.1
    assert s.pct(1.0) == 100.0


def test_round_trip(tmp_path, scale):
    path = tmp_path / "scale.json"
    scale.save(path)
    back = SimilarityScale.load(path)
    assert back == scale
    grid = np.linspace(-1, 1, 999)
    np.testing.assert_array_equal(back.pct(grid), scale.pct(grid))
    assert json.loads(path.read_text())["num_pairs"] == scale.num_pairs
    assert SimilarityScale.from_dict(scale.to_dict()) == scale


def test_degenerate_inputs():
    one = SimilarityScale.fit(_random(1, 8, 0))
    assert one.num_pairs == 0 and one.pct(0.5) == 50.0 and one.pct(1.0) == 100.0
    with pytest.raises(ValueError, match="increasing"):
        SimilarityScale([0.5, 0.2], [0.0, -1.0])
    with pytest.raises(ValueError, match="2-D"):
        SimilarityScale.fit(np.ones(5, np.float32))
