import numpy as np
import pytest

from lookalike.recommend.topk import topk_all, topk_query


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _angles(*deg: float) -> np.ndarray:
    r = np.radians(deg)
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


def _brute(X, k, groups=None, partitions=None):
    """Reference: full score matrix, explicit exclusions, full sort."""
    n = len(X)
    S = (X @ X.T).astype(np.float64)
    allowed = ~np.eye(n, dtype=bool)
    if groups is not None:
        g = np.asarray(groups)
        allowed &= ~((g[:, None] == g[None, :]) & (g[:, None] >= 0))
    if partitions is not None:
        p = np.asarray(partitions)
        allowed &= p[:, None] == p[None, :]
    out = []
    for i in range(n):
        cand = np.flatnonzero(allowed[i])
        cand = cand[np.argsort(-S[i, cand], kind="stable")][:k]
        out.append(cand)
    return out


def _check_against_brute(X, k, scores, idx, **kw):
    ref = _brute(X, k, **kw)
    for i, r in enumerate(ref):
        got = idx[i][idx[i] >= 0]
        assert list(got) == list(r), i
        np.testing.assert_allclose(scores[i, : len(r)], (X[i] @ X[r].T), rtol=1e-5, atol=1e-6)
        assert np.all(np.isneginf(scores[i, len(r):])) and np.all(idx[i, len(r):] == -1)


def test_hand_computed_self_exclusion_and_order():
    X = _angles(0, 10, 30, 90)
    s, i = topk_all(X, 2, show_progress=False)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == i.shape == (4, 2)
    assert i.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    np.testing.assert_allclose(s[0], np.cos(np.radians([10, 30])), rtol=1e-6)


def test_duplicate_is_recommended_unless_grouped():
    X = _angles(0, 40, 0, 90)  # rows 0 and 2 are the same image
    _, i = topk_all(X, 1, show_progress=False)
    assert i[0, 0] == 2 and i[2, 0] == 0
    s, i = topk_all(X, 1, groups=np.array([7, -1, 7, -1]), show_progress=False)
    assert i[0, 0] == 1 and i[2, 0] == 1 and i[3, 0] == 1
    assert i[1, 0] in (0, 2)  # a tie between the two copies
    np.testing.assert_allclose(s[0, 0], np.cos(np.radians(40)), rtol=1e-6)


def test_no_group_value_minus_one_does_not_exclude():
    X = _angles(0, 10, 30)
    _, i = topk_all(X, 2, groups=np.array([-1, -1, -1]), show_progress=False)
    assert i[0].tolist() == [1, 2]


def test_partitions_restrict_candidates_and_pad():
    X = _angles(0, 10, 20, 30)
    s, i = topk_all(X, 3, partitions=np.array([0, 1, 0, 1]), show_progress=False)
    assert i.tolist() == [[2, -1, -1], [3, -1, -1], [0, -1, -1], [1, -1, -1]]
    assert np.isneginf(s[:, 1:]).all()


def test_k_larger_than_n_pads():
    X = _angles(0, 10, 30)
    s, i = topk_all(X, 5, show_progress=False)
    assert i.tolist() == [[1, 2, -1, -1, -1], [0, 2, -1, -1, -1], [1, 0, -1, -1, -1]]
    assert np.isneginf(s[:, 2:]).all() and np.isfinite(s[:, :2]).all()


def test_degenerate_sizes():
    s, i = topk_all(_angles(0), 3, show_progress=False)
    assert i.tolist() == [[-1, -1, -1]]
    s, i = topk_all(_angles(0, 5), 0, show_progress=False)
    assert s.shape == (2, 0) and i.shape == (2, 0)
    s, i = topk_all(np.zeros((0, 4), np.float32), 3, show_progress=False)
    assert s.shape == (0, 3)
    with pytest.raises(ValueError, match="groups"):
        topk_all(_angles(0, 5), 1, groups=np.array([1]), show_progress=False)


def test_matches_brute_force_across_blocks_groups_partitions():
    rng = np.random.default_rng(0)
    X = _unit(rng.standard_normal((300, 16)))
    groups = np.full(300, -1)
    groups[rng.choice(300, 90, replace=False)] = rng.integers(0, 25, 90)  # groups straddle blocks
    parts = rng.integers(0, 4, 300)
    # block_size 128 > 64 rows exercises the threaded selection; 7 exercises ragged small blocks
    for bs in (7, 128, 4096):
        s, i = topk_all(X, 10, block_size=bs, groups=groups, show_progress=False)
        _check_against_brute(X, 10, s, i, groups=groups)
        s, i = topk_all(X, 10, block_size=bs, groups=groups, partitions=parts, show_progress=False)
        _check_against_brute(X, 10, s, i, groups=groups, partitions=parts)


def test_big_group_leaves_too_few_candidates():
    X = _unit(np.random.default_rng(1).standard_normal((6, 4)))
    s, i = topk_all(X, 3, groups=np.array([0, 0, 0, 0, 0, 1]), show_progress=False)
    assert i[0].tolist() == [5, -1, -1] and i[5, :3].tolist() == [*_brute(X, 3)[5]]
    assert np.isneginf(s[:5, 1:]).all() and np.isfinite(s[5]).all()


def test_topk_query_mask_both_paths():
    rng = np.random.default_rng(2)
    D = _unit(rng.standard_normal((60, 8)))
    Q = _unit(rng.standard_normal((5, 8)))
    S = Q @ D.T
    for share in (0.1, 0.8):  # a few rows are gathered, many rows are blanked
        mask = rng.random(60) < share
        s, i = topk_query(D, Q, 4, mask=mask)
        allowed = np.flatnonzero(mask)
        for q in range(5):
            ref = allowed[np.argsort(-S[q, allowed])][:4]
            got = i[q][i[q] >= 0]
            assert got.tolist() == ref.tolist()
            np.testing.assert_allclose(s[q, : len(ref)], S[q, ref], rtol=1e-5)


def test_topk_query_single_vector_padding_and_errors():
    D = _angles(0, 10, 30)
    s, i = topk_query(D, _angles(5)[0], 5, mask=np.array([True, False, True]))
    assert i.tolist() == [[0, 2, -1, -1, -1]] and np.isneginf(s[0, 2:]).all()
    s, i = topk_query(D, _angles(5), 2)
    assert sorted(i[0].tolist()) == [0, 1]
    s, i = topk_query(D, _angles(5), 2, mask=np.zeros(3, bool))
    assert i.tolist() == [[-1, -1]]
    with pytest.raises(ValueError, match="dim"):
        topk_query(D, np.ones((1, 3), np.float32), 2)
