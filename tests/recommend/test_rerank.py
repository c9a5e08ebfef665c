"""The click re-ranking formula: debiasing by position, the Beta prior, exploration, the blend."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.recommend.rerank import ClickStats, RerankParams, blend, rerank_order


def stats(**params: float) -> ClickStats:
    return ClickStats(RerankParams(**params))


def test_no_events_or_no_weight_keeps_the_visual_order() -> None:
    s = stats()
    pct = np.asarray([90.0, 80.0, 70.0])
    assert rerank_order(s, "src", ["a", "b", "c"], pct).tolist() == [0, 1, 2]
    s.add("click", "c", "src", 2)
    assert rerank_order(stats(weight=0.0), "src", ["a", "b", "c"], pct).tolist() == [0, 1, 2]


def test_signal_matches_the_documented_formula() -> None:
    s = stats(prior_strength=10.0, prior_ctr=0.1, exploration=0.5, position_eta=1.0)
    for _ in range(4):
        s.add("impression", "t", "src", 1)  # propensity 1/2 each: E = 2
    s.add("click", "t", "src", 1)
    e, c, m, mu = 2.0, 1.0, 10.0, 0.1  # fewer than 50 examinations overall: mu is the prior
    theta = (c + m * mu) / (e + m)
    b = 0.5 * math.sqrt(theta * (1 - theta) / (e + m))
    assert s.signal("src", ["t"])[0] == pytest.approx((theta + b) / (theta + b + mu))
    assert blend(np.asarray([80.0]), np.asarray([0.6]), 0.25)[0] == pytest.approx(0.75 * 0.8 + 0.25 * 0.6)


def test_clicks_low_in_the_list_count_for_more() -> None:
    s = stats(exploration=0.0)
    for target, pos in (("top", 0), ("low", 5)):
        for _ in range(100):
            s.add("impression", target, "src", pos)
        for _ in range(5):
            s.add("click", target, "src", pos)
    u_top, u_low = s.signal("src", ["top", "low"])
    assert u_low > u_top  # same raw CTR, but "low" was examined far less often


def test_a_much_clicked_item_climbs_and_a_new_item_gets_explored() -> None:
    s = stats(weight=0.5)
    ids = ["a", "b", "c", "new"]
    pct = np.asarray([80.0, 79.0, 78.0, 77.0])
    for _ in range(300):
        for pos, t in enumerate(ids[:3]):
            s.add("impression", t, "src", pos)
    for _ in range(40):
        s.add("click", "c", "src", 2)
    for _ in range(3):
        s.add("click", "a", "src", 0)
    order = [ids[i] for i in rerank_order(s, "src", ids, pct)]
    assert order[0] == "c"
    # "new" has no impressions: its exploration bonus lifts it above "a" and "b", both seen a lot
    assert order.index("new") < order.index("b")
    assert rerank_order(s, "other-source", ids, pct).tolist() == [0, 1, 2, 3]


def test_load_folds_aggregated_rows() -> None:
    s = stats()
    n = s.load([("impression", "t", "src", 0, 30), ("click", "t", "src", 0, 3), ("click", "t", None, None, 9)])
    assert n == 42 and s.pairs["src"]["t"] == [30.0, 3.0] and s.total_c == 3.0
