"""Helpers for the live-catalogue tests: the reference lists live lists must equal."""
from __future__ import annotations

import numpy as np

from lookalike.recommend.topk import topk_all
from lookalike.recommender import Recommender


def expected_lists(rec: Recommender) -> dict[str, list[str]]:
    """Every live product's list computed from scratch (the reference the live lists must equal)."""
    rows = [i for i, pid in enumerate(rec.ids) if rec.pos.get(pid) == i]
    ids = [rec.ids[i] for i in rows]
    hashes = [rec.products[p].image_hash for p in ids]
    codes = {h: n for n, h in enumerate(dict.fromkeys(hashes))}
    groups = np.asarray([codes[h] for h in hashes], np.int64)
    _, idx = topk_all(rec.vectors[rows], rec.pre_idx.shape[1], groups=groups, show_progress=False)
    return {pid: [ids[j] for j in idx[n] if j >= 0] for n, pid in enumerate(ids)}


def assert_scratch_lists(rec: Recommender, got: dict[str, list[str]]) -> None:
    """``got`` holds, for every live product, the list a rebuild would make: the same scores rank by rank.
    Ids are not compared where scores tie, since a rebuild may order near-equal floats the other way."""
    want = expected_lists(rec)
    assert got.keys() == want.keys()

    def scores(pid: str, lst: list[str]) -> np.ndarray:
        return rec.vectors[[rec.pos[q] for q in lst]] @ rec.vectors[rec.pos[pid]] if lst else np.zeros(0)

    for pid, ids in want.items():
        assert len(got[pid]) == len(ids) and np.allclose(scores(pid, got[pid]), scores(pid, ids), atol=1e-5), \
            f"{pid}: {got[pid]} != {ids}"


def live_lists(rec: Recommender) -> dict[str, list[str]]:
    return {pid: [rec.ids[j] for j in rec.pre_idx[i] if j >= 0] for pid, i in rec.pos.items()}


def stored_lists(rec: Recommender) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rec.store.iter_similar(rec.encoder_name):
        out.setdefault(r.product_id, []).append(r.similar_id)
    return out
