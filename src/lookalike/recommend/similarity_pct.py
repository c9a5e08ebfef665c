"""A similarity percentage that means the same thing for every encoder: how rare a score is.

Raw cosine scores are not comparable across encoders (one model's 0.6 is another's 0.9). We measure, once per
encoder and catalogue, the distribution of scores between random pairs of distinct products, and report
    pct(s) = 100 * clip(log10(1 / t(s)) / 6, 0, 1),   t(s) = share of random pairs scoring >= s.
So 100 % means "rarer than one random pair in a million", the median random pair gets ~5 % and an identical
image gets 100 %. t is stored as knots (score, log10 t) and interpolated linearly in log10 t, which keeps
pct monotonic in the score; beyond the largest sampled score it rises linearly to 100 at s = 1.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.io_utils import read_json, write_json

log = logging.getLogger(__name__)

# Pairs at least this similar are the same image (duplicates); they are not "random pairs" and would pin
# the top knot at 1.0, so an identical image could no longer reach 100 %.
_IDENTICAL = 1.0 - 1e-4
_KNOTS_PER_DECADE = 10
# Tail shares above the median, so scores below the median random pair map smoothly onto 0..5 %.
_UPPER_TAILS = (1.0, 0.95, 0.9, 0.8, 0.7, 0.6)


@dataclass
class SimilarityScale:
    knot_scores: list[float]            # strictly increasing cosine scores
    knot_log_tails: list[float]         # log10(share of random pairs scoring >= knot), decreasing
    num_pairs: int = 0                  # random pairs the knots were measured on (0: fallback scale)
    decades: float = 6.0                # 100 % = rarer than one pair in 10**decades
    info: dict[str, Any] = field(default_factory=dict)
    _x: np.ndarray = field(init=False, repr=False, compare=False)
    _y: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._x = np.asarray(self.knot_scores, dtype=np.float64)
        self._y = np.asarray(self.knot_log_tails, dtype=np.float64)
        if self._x.ndim != 1 or self._x.shape != self._y.shape or len(self._x) < 2:
            raise ValueError("a similarity scale needs at least two (score, log tail) knots of equal length")
        if np.any(np.diff(self._x) <= 0) or np.any(np.diff(self._y) > 0):
            raise ValueError("similarity scale knots must have increasing scores and non-increasing tails")

    @classmethod
    def fit(cls, vectors: np.ndarray, sample: int = 3000, seed: int = 0, decades: float = 6.0) -> SimilarityScale:
        """Measure the random-pair score distribution on up to ``sample`` rows (all pairs among them)."""
        X = np.asarray(vectors, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"vectors must be a 2-D (rows, dim) array, got shape {X.shape}")
        n = len(X)
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(n, size=sample, replace=False)) if n > sample else np.arange(n)
        S = X[rows]
        norms = np.linalg.norm(S, axis=1, keepdims=True)
        S = S / np.where(norms > 0, norms, 1.0)
        m = len(S)
        info = {"n_vectors": n, "sample": int(m), "seed": seed, "dim": int(X.shape[1])}
        pairs = (S @ S.T)[np.triu(np.ones((m, m), dtype=bool), 1)] if m >= 2 else np.zeros(0, np.float32)
        pairs = pairs[np.isfinite(pairs)]
        n_identical = int((pairs >= _IDENTICAL).sum())
        pairs = np.sort(pairs[pairs < _IDENTICAL])
        N = len(pairs)
        info["identical_pairs_dropped"] = n_identical
        if N == 0:
            log.warning("similarity scale: no pairs of distinct products to measure (%d vectors); "
                        "falling back to pct = 100 * cosine", n)
            return cls([0.0, 1.0], [0.0, -decades], 0, decades, info)
        lowest = math.log10(1.0 / N)
        span = math.log10(0.5) - lowest
        tails = np.concatenate([
            _UPPER_TAILS,
            np.logspace(math.log10(0.5), lowest, max(2, math.ceil(span * _KNOTS_PER_DECADE) + 1)),
        ])
        counts = np.unique(np.maximum(1, np.round(tails * N)).astype(np.int64))[::-1]
        xs = np.unique(pairs[N - counts])
        # the exact share of sampled pairs >= each knot (ties make it larger than the nominal tail)
        ts = (N - np.searchsorted(pairs, xs, side="left")) / N
        logt = np.log10(ts)
        if xs[-1] < 1.0:
            xs = np.append(xs, 1.0)
            logt = np.append(logt, min(-decades, logt[-1]))
        scale = cls(xs.tolist(), logt.tolist(), N, decades, info)
        log.info("similarity scale on %d pairs of %d vectors: median pair %.3f, 1e-3 tail %.3f, max %.3f",
                 N, m, scale.score_at_tail(0.5), scale.score_at_tail(1e-3), float(pairs[-1]))
        return scale

    def log_tail(self, scores: np.ndarray | float) -> np.ndarray:
        """log10 of the share of random pairs scoring at least ``scores`` (interpolated between knots)."""
        return np.interp(np.asarray(scores, dtype=np.float64), self._x, self._y)

    def pct(self, scores: np.ndarray | float) -> np.ndarray:
        """Similarity percentage of cosine scores: float32, same shape, rounded to 0.1. -inf padding -> 0."""
        p = 100.0 * np.clip(-self.log_tail(scores) / self.decades, 0.0, 1.0)
        return np.round(p, 1).astype(np.float32)

    def score_at_tail(self, tail: float) -> float:
        """The score that only a share ``tail`` of random pairs reaches (inverse of the tail function)."""
        return float(np.interp(math.log10(tail), self._y[::-1], self._x[::-1]))

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "knot_scores": [float(x) for x in self._x],
                "knot_log_tails": [float(y) for y in self._y], "num_pairs": self.num_pairs,
                "decades": self.decades, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SimilarityScale:
        if d.get("version", 1) != 1:
            raise ValueError(f"similarity scale version {d.get('version')!r} is not supported (expected 1)")
        return cls(list(d["knot_scores"]), list(d["knot_log_tails"]), int(d.get("num_pairs", 0)),
                   float(d.get("decades", 6.0)), dict(d.get("info", {})))

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> SimilarityScale:
        return cls.from_dict(read_json(Path(path)))
