"""build_index / load_index: measured infos.json, files on disk, round trips through the folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.index import build as build_mod
from lookalike.index.build import build_index, exact_topk, load_index, recall_at_k

from .conftest import brute_force, clustered

FIELDS = {"backend", "params", "n", "dim", "bytes", "recall_at_10", "ms_per_query", "qps_batched", "timings",
          "reason", "created_at", "file", "capabilities"}


@pytest.mark.parametrize("name,params", [("auto", {}), ("exact", {}), ("hnswlib", {"M": 16}),
                                         ("annoy", {"n_trees": 16}), ("faiss", {"factory": "HNSW16"})])
def test_build_save_load(name: str, params: dict, vectors: np.ndarray, tmp_path: Path) -> None:
    x = vectors[:3000]
    labels = np.arange(len(x)) + 7
    index, _ = build_index(x, labels, name=name, path=tmp_path, params=params, recall_sample=300)
    on_disk = json.loads((tmp_path / "infos.json").read_text())
    assert FIELDS <= set(on_disk)
    assert {"train", "add", "total"} <= set(on_disk["timings"])
    assert on_disk["n"] == 3000 and on_disk["dim"] == 64 and on_disk["bytes"] > 0
    assert 0.9 <= on_disk["recall_at_10"] <= 1.0
    assert on_disk["ms_per_query"] > 0 and on_disk["qps_batched"] > 0
    assert (tmp_path / on_disk["file"]).exists()
    if name == "auto":
        assert on_disk["backend"] == "faiss" and on_disk["params"]["factory"] == "Flat"
        assert on_disk["recall_at_10"] == 1.0 and "exact search" in on_disk["reason"]
    loaded = load_index(tmp_path)
    assert type(loaded) is type(index) and len(loaded) == 3000
    s1, l1 = index.search(x[:50], 10)
    s2, l2 = loaded.search(x[:50], 10)
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    assert set(l2.ravel()) <= set(labels.tolist())


def test_build_without_path_writes_nothing(tmp_path: Path, vectors: np.ndarray) -> None:
    index, infos = build_index(vectors[:500], name="exact", recall_sample=100)
    assert len(index) == 500 and infos["recall_at_10"] == 1.0 and "save" not in infos["timings"]
    assert not any(tmp_path.iterdir())


def test_build_rejects_bad_requests(tmp_path: Path, vectors: np.ndarray) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        build_index(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="no index fits"):
        build_index(vectors, name="auto", max_memory="1K")
    with pytest.raises(ValueError, match="Unknown index"):
        build_index(vectors[:10], name="nope")
    with pytest.raises(FileNotFoundError, match="infos.json"):
        load_index(tmp_path)
    assert not (tmp_path / "infos.json").exists()


def test_exact_topk_blocks_agree_with_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod, "GT_BLOCK_BYTES", 4 * 20 * 37)  # ~37-row base blocks for 20 queries
    x = clustered(500, 16, clusters=5, seed=9)
    labels = np.arange(500) * 10
    got = exact_topk(x[:20], x, labels, 12)
    _, ref = brute_force(x[:20], x, 12)
    np.testing.assert_array_equal(got, labels[ref])


@pytest.mark.parametrize("found,truth,expected", [
    ([[1, 2, 3]], [[1, 2, 3]], 1.0),
    ([[3, 2, 1]], [[1, 2, 3]], 1.0),  # order does not matter
    ([[1, 9, 8]], [[1, 2, 3]], 1 / 3),
    ([[1, -1, -1]], [[1, -1, -1]], 1.0),  # padding is not a neighbour to find
    ([[-1, -1]], [[4, 5]], 0.0),
    ([[1, 2], [5, 6]], [[1, 2], [7, 8]], 0.5),
])
def test_recall_at_k(found: list, truth: list, expected: float) -> None:
    assert recall_at_k(np.array(found), np.array(truth)) == pytest.approx(expected)
