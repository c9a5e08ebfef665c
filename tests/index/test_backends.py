"""Every backend: round trip, exactness or recall, padding, add/remove/filter where claimed, honest capabilities."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lookalike.index import Index, create_index, index_class, list_indexes

from .conftest import brute_force, clustered

K = 10
# (registry name, params): the configurations every generic test runs over
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("exact", {}),
    ("faiss", {"factory": "Flat"}),
    ("faiss", {"factory": "HNSW32", "efSearch": 64}),
    ("faiss", {"factory": "IVF32,Flat", "nprobe": 8}),
    ("hnswlib", {"M": 16, "ef_construction": 100, "ef": 64}),
    ("annoy", {"n_trees": 32}),
]
IDS = [f"{n}-{p.get('factory', '')}".strip("-") for n, p in CONFIGS]
APPROX = {"faiss-HNSW32", "faiss-IVF32,Flat", "hnswlib", "annoy"}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


@pytest.fixture(scope="module")
def built(vectors: np.ndarray) -> dict[str, Index]:
    """Each config built once over the shared vectors, with labels that are not row numbers."""
    out = {}
    for cid, (name, params) in zip(IDS, CONFIGS):
        index = create_index(name, vectors.shape[1], **params)
        index.build(vectors, 1000 + 3 * np.arange(len(vectors)))
        out[cid] = index
    return out


def test_registry_lists_backends_and_rejects_unknown_names() -> None:
    assert {"exact", "faiss", "hnswlib", "annoy"} <= set(list_indexes())
    with pytest.raises(ValueError, match="Valid indexs: .*annoy.*exact.*faiss.*hnswlib"):
        create_index("no-such-index", 8)
    assert index_class("faiss").name == "faiss"


@pytest.mark.parametrize("cid", IDS)
def test_search_save_load_round_trip(cid: str, built: dict[str, Index], vectors: np.ndarray, tmp_path: Path) -> None:
    index = built[cid]
    scores, labels = index.search(vectors[:200], K)
    assert scores.shape == labels.shape == (200, K)
    assert scores.dtype == np.float32 and labels.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores must come sorted, best first"
    assert set(np.unique(labels)) <= set((1000 + 3 * np.arange(len(vectors))).tolist())
    path = tmp_path / f"index.{index.ext}"  # type: ignore[attr-defined]
    index.save(path)
    loaded = index_class(index.name).load(path)
    s2, l2 = loaded.search(vectors[:200], K)
    np.testing.assert_array_equal(l2, labels)
    np.testing.assert_allclose(s2, scores, rtol=1e-5, atol=1e-5)
    assert len(loaded) == len(index) == len(vectors)
    assert loaded.capabilities == index.capabilities
    assert loaded.params == index.params


@pytest.mark.parametrize("cid", IDS)
def test_recall_against_brute_force(cid: str, built: dict[str, Index], vectors: np.ndarray) -> None:
    queries = vectors[::10]
    ref_s, ref_rows = brute_force(queries, vectors, K)
    scores, labels = built[cid].search(queries, K)
    rows = (labels - 1000) // 3
    r = recall(rows, ref_rows)
    if cid in APPROX:
        assert r >= 0.9, f"{cid} recall@10 {r:.3f}"
    else:
        assert r == 1.0
        np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    # scores are cosines of the returned rows, whatever the backend's native distance
    got = np.einsum("qd,qkd->qk", queries, vectors[rows])
    np.testing.assert_allclose(scores, got, atol=1e-4)


def test_exact_matches_numpy_on_raw_unnormalised_input() -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((700, 24)).astype(np.float32) * 5.0
    queries = rng.standard_normal((33, 24)).astype(np.float32)
    index = create_index("exact", 24, block_bytes=4096)  # tiny blocks: many query blocks are exercised
    index.build(base)
    scores, labels = index.search(queries, 15)
    ref_s, ref_i = brute_force(queries, base, 15)
    np.testing.assert_array_equal(labels, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)


@pytest.mark.parametrize("name,params", [c for c in CONFIGS if "IVF" not in c[1].get("factory", "")],
                         ids=[i for i in IDS if "IVF" not in i])
def test_padding_when_k_exceeds_n(name: str, params: dict[str, Any]) -> None:
    x = clustered(7, 16, clusters=2, seed=1)
    index = create_index(name, 16, **params)
    index.build(x, np.arange(7) + 50)
    scores, labels = index.search(x[:3], 10)
    assert labels.shape == (3, 10)
    assert np.all(labels[:, 7:] == -1) and np.all(np.isneginf(scores[:, 7:]))
    for row in labels:
        assert sorted(row[:7].tolist()) == list(range(50, 57))
    assert labels[0, 0] == 50 and np.isclose(scores[0, 0], 1.0, atol=1e-5)


ADDABLE = [("exact", {}), ("faiss", {"factory": "Flat"}), ("faiss", {"factory": "HNSW32"}),
           ("faiss", {"factory": "IVF16,Flat", "nprobe": 16}), ("faiss", {"factory": "SQ8"}),
           ("hnswlib", {"M": 16, "ef_construction": 100})]


@pytest.mark.parametrize("name,params", ADDABLE, ids=[f"{n}-{p.get('factory', '')}" for n, p in ADDABLE])
def test_add_and_remove(name: str, params: dict[str, Any], tmp_path: Path) -> None:
    x = clustered(2400, 32, clusters=30, seed=2)
    index = create_index(name, 32, **params)
    assert {"add", "remove"} <= index.capabilities
    index.build(x[:2000], np.arange(2000))
    index.add(x[2000:], np.arange(2000, 2400) + 10_000)
    assert len(index) == 2400
    _, top = index.search(x[2000:], 1)
    assert np.mean(top[:, 0] == np.arange(2000, 2400) + 10_000) >= 0.98  # added rows are found

    gone = np.concatenate([np.arange(0, 2000, 10), np.arange(12_000, 12_400, 4)])
    index.remove(gone)
    index.remove(np.array([999_999]))  # unknown labels are ignored
    assert len(index) == 2400 - len(gone)
    _, labels = index.search(x, 10)
    assert not np.isin(labels, gone).any(), "removed labels must never come back"
    if "filter" in index.capabilities:  # a filter that allows removed labels must not revive them
        allowed = np.arange(0, 2000, 5)
        _, labels = index.search(x[:200], 10, allowed=allowed)  # type: ignore[call-arg]
        assert not np.isin(labels, gone).any() and np.isin(labels[labels >= 0], allowed).all()
        assert (labels >= 0).all()

    path = tmp_path / f"index.{index.ext}"  # type: ignore[attr-defined]
    index.save(path)
    loaded = index_class(name).load(path)
    assert len(loaded) == len(index)
    _, labels2 = loaded.search(x, 10)
    assert not np.isin(labels2, gone).any()

    with pytest.raises(ValueError, match="already in the index"):
        loaded.add(x[5:6], np.array([5]))
    loaded.add(x[:1], np.array([0]))  # a removed label may come back, with its vector
    _, top = loaded.search(x[:1], 1)
    assert top[0, 0] == 0 and len(loaded) == len(index) + 1


FILTERABLE = [("exact", {}), ("faiss", {"factory": "Flat"}), ("faiss", {"factory": "HNSW32"}),
              ("faiss", {"factory": "IVF16,Flat", "nprobe": 2}), ("hnswlib", {"M": 16, "ef_construction": 100})]


@pytest.mark.parametrize("name,params", FILTERABLE, ids=[f"{n}-{p.get('factory', '')}" for n, p in FILTERABLE])
@pytest.mark.parametrize("share,exact_max", [(0.01, None), (0.01, 0), (0.6, None)],
                         ids=["tight", "tight-no-exact-fallback", "loose"])
def test_filter_returns_only_allowed_labels(name: str, params: dict[str, Any], share: float,
                                            exact_max: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if exact_max is not None:  # force tight filters through the graph / inverted lists, not exact scoring
        monkeypatch.setattr(index_class(name), "EXACT_FILTER_MAX", exact_max, raising=False)
    x = clustered(3000, 32, clusters=30, seed=4)
    labels = np.arange(3000) * 2  # even labels only, so a mask indexed by label is exercised properly
    index = create_index(name, 32, **params)
    assert "filter" in index.capabilities
    index.build(x, labels)
    rng = np.random.default_rng(0)
    allowed = np.sort(rng.choice(labels, int(share * len(labels)), replace=False))
    mask = np.zeros(labels.max() + 1, bool)
    mask[allowed] = True
    q = x[:50]
    ok_rows = np.flatnonzero(np.isin(labels, allowed))
    _, ref = brute_force(q, x[ok_rows], 10)
    ref_labels = labels[ok_rows][ref]
    for form in (allowed, mask):
        _, got = index.search(q, 10, allowed=form)  # type: ignore[call-arg]
        assert np.isin(got[got >= 0], allowed).all()
        assert (got >= 0).sum(axis=1).min() >= 9  # enough allowed rows exist: results are (nearly) full
        assert recall(got, ref_labels) >= 0.9


def test_capabilities_are_honest(vectors: np.ndarray) -> None:
    annoy = create_index("annoy", 64, n_trees=4)
    annoy.build(vectors[:500])
    assert annoy.capabilities == frozenset()
    with pytest.raises(NotImplementedError):
        annoy.add(vectors[:1], np.array([10_000]))
    with pytest.raises(NotImplementedError):
        annoy.remove(np.array([0]))
    sq = create_index("faiss", 64, factory="SQ8")  # removes natively, but its scan cannot take a selector
    sq.build(vectors[:500])
    assert sq.capabilities == {"add", "remove"}
    with pytest.raises(NotImplementedError):
        sq.search(vectors[:1], 5, allowed=np.arange(10))  # type: ignore[call-arg]
    hnsw = create_index("faiss", 64, factory="HNSW16")
    assert hnsw.capabilities == {"add", "remove", "filter"}  # remove through tombstones + selector


def test_faiss_product_quantization_builds_and_is_smaller(vectors: np.ndarray) -> None:
    flat = create_index("faiss", 64, factory="Flat")
    flat.build(vectors)
    pq = create_index("faiss", 64, factory="IVF16,PQ16", nprobe=16, train_size=3000)
    pq.build(vectors)
    assert pq.nbytes() < flat.nbytes() / 3
    _, truth = brute_force(vectors[:100], vectors, K)
    _, got = pq.search(vectors[:100], K)
    assert recall(got, truth) >= 0.4  # lossy 16-byte codes: far from exact, far from random (0.002)


@pytest.mark.parametrize("cid", IDS)
def test_nbytes_is_plausible(cid: str, built: dict[str, Index], vectors: np.ndarray) -> None:
    raw = vectors.nbytes
    assert raw <= built[cid].nbytes() <= 4 * raw


def test_bad_input_is_rejected(vectors: np.ndarray) -> None:
    index = create_index("exact", 64)
    with pytest.raises(ValueError, match="shape"):
        index.build(vectors[:, :32])
    with pytest.raises(ValueError, match="unique"):
        index.build(vectors[:3], np.array([1, 1, 2]))
    with pytest.raises(ValueError, match=">= 0"):
        index.build(vectors[:3], np.array([1, -1, 2]))
    with pytest.raises(ValueError, match="labels"):
        index.build(vectors[:3], np.array([1, 2]))
    index.build(vectors[:3])
    with pytest.raises(ValueError, match="k must be"):
        index.search(vectors[:1], 0)
    _, lab = index.search(vectors[0], 2)  # one query as a 1-D vector
    assert lab.shape == (1, 2) and lab[0, 0] == 0
    with pytest.raises(ValueError, match="invalid faiss factory"):
        create_index("faiss", 64, factory="NoSuchThing99")
    with pytest.raises(ValueError, match="IDMap"):
        create_index("faiss", 64, factory="IDMap,Flat")
    with pytest.raises(ValueError, match="needs at least 64 vectors"):
        create_index("faiss", 64, factory="IVF64,Flat").build(vectors[:20])
    with pytest.raises(TypeError):
        create_index("hnswlib", 64, no_such_param=1)


def test_empty_indexes_return_padding() -> None:
    for name in ("exact", "faiss", "hnswlib"):
        scores, labels = create_index(name, 8).search(np.ones((2, 8), np.float32), 3)
        assert (labels == -1).all() and np.isneginf(scores).all()
