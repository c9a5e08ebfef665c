"""The metric functions against rankings computed by hand (the arithmetic is written next to each figure)."""
import math

import numpy as np
import pytest

from lookalike.evaluate import metrics as m
from lookalike.evaluate.retrieval import select_queries

# query 0: results hit, miss, hit, miss, miss; 3 relevant items exist in the catalogue
# query 1: results miss, miss, miss, miss, hit; 1 relevant item exists
HITS = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1]], dtype=bool)
N_REL = np.array([3, 1])
L2, L3, L4, L6 = math.log2(2), math.log2(3), math.log2(4), math.log2(6)


def test_precision_recall_hit_rate_by_hand() -> None:
    assert m.precision_at_k(HITS, 5) == pytest.approx([2 / 5, 1 / 5])
    assert m.precision_at_k(HITS, 2) == pytest.approx([1 / 2, 0 / 2])
    assert m.recall_at_k(HITS, N_REL, 5) == pytest.approx([2 / 3, 1 / 1])
    assert m.recall_at_k(HITS, N_REL, 2) == pytest.approx([1 / 3, 0 / 1])
    assert m.hit_rate_at_k(HITS, 2) == pytest.approx([1, 0])
    assert m.hit_rate_at_k(HITS, 5) == pytest.approx([1, 1])


def test_average_precision_by_hand() -> None:
    # q0 @5: hits at ranks 1 and 3 -> (P@1 + P@3) / min(5, 3) = (1 + 2/3) / 3
    # q1 @5: hit at rank 5 -> P@5 / min(5, 1) = (1/5) / 1
    assert m.average_precision_at_k(HITS, N_REL, 5) == pytest.approx([(1 + 2 / 3) / 3, 1 / 5])
    # @2: q0 -> P@1 / min(2, 3) = 1/2; q1 -> nothing in the top 2
    assert m.average_precision_at_k(HITS, N_REL, 2) == pytest.approx([1 / 2, 0])


def test_ndcg_by_hand() -> None:
    # q0 @5: DCG = 1/log2(2) + 1/log2(4); ideal puts its 3 relevant first: 1/log2(2) + 1/log2(3) + 1/log2(4)
    # q1 @5: DCG = 1/log2(6); ideal = 1/log2(2)
    want5 = [(1 / L2 + 1 / L4) / (1 / L2 + 1 / L3 + 1 / L4), (1 / L6) / (1 / L2)]
    assert m.ndcg_at_k(HITS, N_REL, 5) == pytest.approx(want5)
    # q0 @2: DCG = 1/log2(2); ideal over min(2, 3) = 2 slots: 1/log2(2) + 1/log2(3)
    assert m.ndcg_at_k(HITS, N_REL, 2) == pytest.approx([1 / (1 / L2 + 1 / L3), 0])


def test_perfect_ranking_scores_one() -> None:
    hits = np.ones((3, 4), dtype=bool)
    vals = m.per_query(hits, [10, 4, 7], [4])
    for name in ("P@4", "mAP@4", "nDCG@4", "HR@4"):
        assert vals[name] == pytest.approx([1, 1, 1]), name
    assert vals["R@4"] == pytest.approx([4 / 10, 4 / 4, 4 / 7])


def test_short_result_lists_count_missing_ranks_as_misses() -> None:
    # only 2 results came back (both hits), 5 relevant exist: P@5 = 2/5, AP@5 = (1 + 1) / min(5, 5)
    hits = np.array([[1, 1]], dtype=bool)
    assert m.precision_at_k(hits, 5) == pytest.approx([2 / 5])
    assert m.average_precision_at_k(hits, [5], 5) == pytest.approx([2 / 5])
    with pytest.raises(ValueError, match="k must be >= 1"):
        m.precision_at_k(hits, 0)
    with pytest.raises(ValueError, match="one count per query"):
        m.recall_at_k(hits, [1, 2], 2)


def test_summarise_and_by_group() -> None:
    vals = m.per_query(HITS, N_REL, [5])
    overall = m.summarise(vals)
    assert overall["P@5"] == pytest.approx((2 / 5 + 1 / 5) / 2, abs=1e-4)
    groups = m.by_group(vals, ["shirts", "shoes"])
    assert groups["shirts"]["queries"] == 1 and groups["shirts"]["R@5"] == pytest.approx(2 / 3, abs=1e-4)
    assert groups["shoes"]["HR@5"] == 1.0


def test_latency_percentiles_by_hand() -> None:
    # 1..100 ms; numpy's linear percentile: position (n-1)*q -> p50 between 50 and 51, p95 at 95 + 0.05, p99 at 99.01
    lat = m.latency_summary([i / 1000 for i in range(1, 101)])
    assert lat["n"] == 100
    assert (lat["p50_ms"], lat["p95_ms"], lat["p99_ms"]) == pytest.approx((50.5, 95.05, 99.01))
    assert lat["mean_ms"] == pytest.approx(50.5)
    assert m.latency_summary([]) == {"n": 0}


def test_select_queries_is_seeded_and_skips_unusable_labels() -> None:
    ids = [f"p{i}" for i in range(8)]
    labels = ["a", "a", "b", None, "c", "a", "d", "d"]  # b and c have one product: no relevant item exists
    q1, skipped = select_queries(ids, labels, 3, seed=7)
    q2, _ = select_queries(ids, labels, 3, seed=7)
    assert q1 == q2 and len(q1) == 3 and set(q1) <= {"p0", "p1", "p5", "p6", "p7"}
    assert skipped == {"no_label": 1, "label_of_one_product": 2}
    all_q, _ = select_queries(ids, labels, 100)
    assert all_q == ["p0", "p1", "p5", "p6", "p7"]
    with pytest.raises(ValueError, match="nothing to evaluate"):
        select_queries(["x", "y"], ["a", "b"], 5)


def test_recall_vs_exact_by_hand_and_with_ties() -> None:
    exact = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.5]])
    # q0: the index found 0.9, 0.7 and 0.6 -> two of the true top-3 (score >= 0.7): 2/3
    # q1: all items score 0.5, a tie at the cut-off: any three of them are right: 3/3
    found = np.array([[0.9, 0.7, 0.6], [0.5, 0.5, 0.5]])
    assert m.recall_vs_exact(found, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    # @1: q0 found the best (0.9): 1; q1: 1
    assert m.recall_vs_exact(found, exact, 1) == pytest.approx(1.0)
    # a short result list (padding -inf) misses: 1 of the top 3
    assert m.recall_vs_exact(np.array([[0.9, -np.inf, -np.inf]]), exact[:1], 3) == pytest.approx(1 / 3)
