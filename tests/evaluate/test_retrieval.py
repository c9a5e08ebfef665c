"""Same-label retrieval on a built workspace: the ranking, the ground truth and the index figures."""
from pathlib import Path

import numpy as np
import pytest

from lookalike.evaluate.retrieval import LoadedWorkspace, evaluate_retrieval, select_queries
from lookalike.store.sql import ProductRow


def test_ranking_and_ground_truth_follow_the_labels(eval_ws: Path) -> None:
    lw = LoadedWorkspace.open(eval_ws)
    labels = dict(zip(lw.ids, lw.labels("category")))
    qids, skipped = select_queries(lw.ids, list(labels.values()), 25, seed=3)
    res = evaluate_retrieval(lw, qids, lw.ids, labels, [5, 10])
    assert skipped == {"no_label": 0, "label_of_one_product": 0}
    # the generator makes 4 shapes (the category) in equal shares: 30 each, so 29 others are relevant
    assert set(res.n_relevant.tolist()) == {29}
    for qid, top, hits in zip(res.query_ids, res.top_ids, res.hits):
        assert qid not in top and len(top) == 10
        assert hits.tolist() == [labels[p] == labels[qid] for p in top]
        # exact search: scores of the returned products decrease
        q = lw.vectors[lw.pos[qid]]
        scores = lw.vectors[[lw.pos[p] for p in top]] @ q
        assert np.all(np.diff(scores) <= 1e-6)
    assert res.overall["P@10"] == pytest.approx(res.hits[:, :10].mean(), abs=1e-4)
    assert sum(v["queries"] for v in res.per_category.values()) == 25
    assert res.ann["backend"] and res.ann["recall@10"] == pytest.approx(1.0)  # 120 vectors: exact (Flat) index
    assert res.latency["index"]["n"] == 25 and res.latency["index"]["p99_ms"] >= res.latency["index"]["p50_ms"]


def test_label_from_attributes_and_unknown_label(eval_ws: Path) -> None:
    lw = LoadedWorkspace.open(eval_ws)
    colours = lw.labels("colour")
    assert set(colours) == {"Red", "Blue", "Green", "Black", "Yellow"}
    with pytest.raises(ValueError, match="use 'category'.*colour"):
        lw.labels("nope")


def test_the_source_column_of_the_category_names_it_too(tmp_path: Path) -> None:
    # a fashion-style store: the catalogue mapped articleType to the category; gender stays an attribute
    products = {"a": ProductRow("a", category="Shirts", attributes={"gender": "Men"}),
                "b": ProductRow("b", category="Shoes", attributes={"gender": ""})}
    lw = LoadedWorkspace(tmp_path, "ws", "color-texture", ["a", "b"], np.eye(2, dtype=np.float32), products,
                         tmp_path, "articleType")
    assert lw.labels("articleType") == lw.labels("category") == ["Shirts", "Shoes"]
    assert lw.labels("gender") == ["Men", None]  # an empty cell is no label


def test_ann_recall_of_an_approximate_index(eval_ws_hnsw: Path) -> None:
    lw = LoadedWorkspace.open(eval_ws_hnsw)
    labels = dict(zip(lw.ids, lw.labels("category")))
    res = evaluate_retrieval(lw, lw.ids[:20], lw.ids, labels, [5])
    assert res.ann["backend"] == "hnswlib" and 0.0 <= res.ann["recall@5"] <= 1.0
    assert len(lw.ids) == 100


def test_unbuilt_workspace_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="lookalike build"):
        LoadedWorkspace.open(tmp_path)
