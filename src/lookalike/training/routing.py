"""Calibrate the routing of photo search (``route=auto``) on the catalogue's own validation split.

Routing (``Recommender.route``) searches within the predicted category when its probability reaches a
threshold, within the top few categories when their summed probability does, and globally otherwise. The
threshold trades the precision of a right guess against the cost of a wrong one, so it is chosen where the
expected P@10 is highest, measured by running the three kinds of search for every held-out query: its own
product excluded, relevant when a result's label equals the query's. The queries are the held-out products
re-staged as phone photos when the model was trained with shopper-like views (what photo search receives),
else the studio photos themselves. Shoppers' real photos are never used.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _precision(sims: np.ndarray, allowed: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of the k best allowed rows that are relevant (short lists count their gaps as misses)."""
    cand = np.flatnonzero(allowed)
    if len(cand) == 0:
        return 0.0
    kk = min(k, len(cand))
    top = cand[np.argpartition(-sims[cand], kk - 1)[:kk]]
    return float(relevant[top].sum()) / k


def calibrate_routing(cat_emb: np.ndarray, cat_labels: Sequence[str | None], q_emb: np.ndarray,
                      q_logits: np.ndarray, q_labels: Sequence[str], q_rows: np.ndarray | None,
                      classes: Sequence[str], other: str = "other", top_types: int = 3, k: int = 10,
                      thresholds: Sequence[float] = THRESHOLDS) -> dict[str, Any]:
    """The threshold with the best expected P@k, and the whole curve.

    ``cat_emb`` (n, d) and ``q_emb`` (m, d) are L2-normalised; ``q_rows`` gives each query's own catalogue
    row (excluded from its results), or None when the queries are not catalogue rows.
    """
    names = sorted({x for x in cat_labels if x is not None})
    code = {x: i for i, x in enumerate(names)}
    cat_code = np.asarray([code.get(x, -1) if x is not None else -1 for x in cat_labels])
    probs = _softmax(np.asarray(q_logits, np.float64))
    keep = [i for i, c in enumerate(classes) if c != other and c in code]
    per_mode = np.zeros((len(q_emb), 3))  # P@k searching: globally, in the top type, in the top types
    conf = np.zeros(len(q_emb))
    conf_top = np.zeros(len(q_emb))
    for i in range(len(q_emb)):
        sims = cat_emb @ q_emb[i]
        alive = np.ones(len(cat_emb), bool)
        if q_rows is not None:
            alive[q_rows[i]] = False
        relevant = cat_code == code.get(q_labels[i], -2)
        order = sorted(keep, key=lambda c: -probs[i, c])[:top_types]
        conf[i] = probs[i, order[0]] if order else 0.0
        conf_top[i] = sum(probs[i, c] for c in order)
        types = [code[classes[c]] for c in order]
        per_mode[i, 0] = _precision(sims, alive, relevant, k)
        per_mode[i, 1] = _precision(sims, alive & (cat_code == types[0]), relevant, k) if types else per_mode[i, 0]
        per_mode[i, 2] = _precision(sims, alive & np.isin(cat_code, types), relevant, k) if types else per_mode[i, 0]
    curve = []
    for t in thresholds:
        mode = np.where(conf >= t, 1, np.where(conf_top >= t, 2, 0))
        curve.append({"threshold": float(t), f"p_at_{k}": float(per_mode[np.arange(len(mode)), mode].mean()),
                      "routed_top1": float((mode == 1).mean()), "routed_top_types": float((mode == 2).mean())})
    best = max(curve, key=lambda c: (round(c[f"p_at_{k}"], 4), -abs(c["threshold"] - 0.5)))
    out = {"threshold": best["threshold"], "top_types": top_types, f"p_at_{k}": best[f"p_at_{k}"],
           f"p_at_{k}_global": float(per_mode[:, 0].mean()), f"p_at_{k}_always_top1": float(per_mode[:, 1].mean()),
           "queries": len(q_emb), "curve": curve}
    log.info("routing calibrated on %d queries: threshold %.2f, P@%d %.3f (global %.3f)", len(q_emb),
             out["threshold"], k, out[f"p_at_{k}"], out[f"p_at_{k}_global"])
    return out
