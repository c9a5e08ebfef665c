"""Route-threshold calibration on a case small enough to work out by hand."""
from __future__ import annotations

import numpy as np

from lookalike.training.routing import THRESHOLDS, calibrate_routing


def test_the_threshold_that_routes_confident_guesses_and_widens_unsure_ones_wins() -> None:
    # catalogue: two A rows along x, two B rows along y
    cat = np.asarray([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], np.float32)
    cat /= np.linalg.norm(cat, axis=1, keepdims=True)
    labels = ["A", "A", "B", "B"]
    # both queries look like B. q0 is an A, and the model is sure of it (p(A) ~ 1); q1 is a B, but the model
    # leans to A (p(A) = 0.57)
    q = np.asarray([[0, 1], [0, 1]], np.float32)
    logits = np.asarray([[10.0, 0.0], [0.3, 0.0]])
    out = calibrate_routing(cat, labels, q, logits, ["A", "B"], None, ["A", "B"], k=2)
    # globally: q0 gets the two B rows (0), q1 gets them too (1)
    assert out["p_at_2_global"] == 0.5
    # always in the top type: q0 -> A rows (1), q1 -> A rows (0)
    assert out["p_at_2_always_top1"] == 0.5
    curve = {c["threshold"]: c["p_at_2"] for c in out["curve"]}
    assert len(curve) == len(THRESHOLDS)
    # up to 0.55 both route to A: 0.5. From 0.6, q1 is unsure, its top types (A, B) hold everything: the two B rows
    assert curve[0.5] == 0.5 and curve[0.6] == 1.0 and curve[0.95] == 1.0
    assert out["threshold"] == 0.6 and out["p_at_2"] == 1.0  # the best, nearest to 0.5 among equals


def test_a_query_never_finds_itself() -> None:
    cat = np.eye(3, dtype=np.float32)
    out = calibrate_routing(cat, ["A", "B", "B"], cat[:1], np.asarray([[0.0, 0.0]]), ["A"], np.asarray([0]),
                            ["A", "B"], k=1)
    assert out["p_at_1_global"] == 0.0  # its only relevant row is itself, excluded
