"""Click feedback: re-rank a similar list by blending visual similarity with position-debiased click-through.

For a source product s (the page the carousel is on) and a candidate t with similarity ``pct`` (0-100):

- Each impression of t under s at position p (0 = first slot) adds the examination propensity
  ``pi(p) = (1 + p) ** -eta`` to E(s, t), the *expected number of examinations*; each click (or add to
  cart) adds 1 to C(s, t). Dividing clicks by E instead of by raw impressions removes the position bias: an
  item shown low in the list is examined less, so its few clicks count for more (the examination hypothesis,
  inverse-propensity weighting).
- The global debiased rate ``mu = sum C / sum E`` (``prior_ctr`` until ``MIN_GLOBAL_EXAMINATIONS`` are seen)
  is the mean of a Beta prior of strength ``m``: the posterior mean ``theta = (C + m * mu) / (E + m)``.
  A pair with no data sits at mu; it takes about m examinations for the data to dominate.
- Exploration (UCB on the posterior spread): ``b = c * sqrt(theta * (1 - theta) / (E + m))``. Unseen
  candidates get the largest bonus, so new products still reach the visible slots and collect evidence.
- The click signal is squashed to (0, 1) against the prior: ``u = (theta + b) / (theta + b + mu)``; 0.5 means
  "as good as an average pair", 2/3 "twice as good".
- Final score ``f = (1 - w) * pct / 100 + w * u``, w = ``LOOKALIKE_RERANK_WEIGHT``. With w = 0, or no event
  for the source at all, the order is the visual order exactly (u is then the same for every candidate).
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EVENT_TYPES = ("impression", "click", "add_to_cart")
POSITIVE = frozenset({"click", "add_to_cart"})
MIN_GLOBAL_EXAMINATIONS = 50.0


@dataclass(frozen=True)
class RerankParams:
    weight: float = 0.5          # w: share of the click signal in the final score
    prior_strength: float = 20.0  # m: pseudo-examinations of the Beta prior
    prior_ctr: float = 0.05      # mu until enough events are seen globally
    exploration: float = 1.0     # c: UCB multiplier on the posterior standard deviation
    position_eta: float = 1.0    # eta: examination propensity (1 + p) ** -eta

    def propensity(self, position: int | None) -> float:
        return (1.0 + max(0, position or 0)) ** -self.position_eta


class ClickStats:
    """E (expected examinations) and C (clicks) per (source, target) pair, plus global totals; thread-safe."""

    def __init__(self, params: RerankParams | None = None) -> None:
        self.params = params or RerankParams()
        self.pairs: dict[str, dict[str, list[float]]] = {}  # source -> target -> [E, C]
        self.total_e = 0.0
        self.total_c = 0.0
        self._lock = threading.Lock()

    def add(self, type: str, target: str, source: str | None, position: int | None, count: int = 1) -> None:
        if source is None or type not in EVENT_TYPES:
            return  # an event outside a carousel says nothing about a (source, target) pair
        with self._lock:
            ec = self.pairs.setdefault(source, {}).setdefault(target, [0.0, 0.0])
            if type == "impression":
                e = count * self.params.propensity(position)
                ec[0] += e
                self.total_e += e
            else:
                ec[1] += count
                self.total_c += count

    def load(self, rows: Iterable[tuple[str, str, str | None, int | None, int]]) -> int:
        """Fold aggregated (type, target, source, position, count) rows in; returns how many events."""
        n = 0
        for type, target, source, position, count in rows:
            self.add(type, target, source, position, int(count))
            n += int(count)
        return n

    def has_source(self, source: str) -> bool:
        return source in self.pairs

    @property
    def mu(self) -> float:
        p = self.params
        if self.total_e < MIN_GLOBAL_EXAMINATIONS:
            return p.prior_ctr
        return min(0.9, max(1e-4, self.total_c / self.total_e))

    def signal(self, source: str, targets: Sequence[str]) -> np.ndarray:
        """u in (0, 1) per target (see the module docstring)."""
        p, mu = self.params, self.mu
        m = p.prior_strength
        row = self.pairs.get(source, {})
        out = np.empty(len(targets), np.float64)
        for i, t in enumerate(targets):
            e, c = row.get(t, (0.0, 0.0))
            theta = (c + m * mu) / (e + m)
            theta = min(theta, 1.0)
            b = p.exploration * math.sqrt(max(theta * (1.0 - theta), 0.0) / (e + m))
            out[i] = (theta + b) / (theta + b + mu)
        return out


def blend(pct: np.ndarray, signal: np.ndarray, weight: float) -> np.ndarray:
    """f = (1 - w) * pct / 100 + w * u."""
    return (1.0 - weight) * np.asarray(pct, np.float64) / 100.0 + weight * np.asarray(signal, np.float64)


def rerank_order(stats: ClickStats, source: str, targets: Sequence[str], pct: np.ndarray) -> np.ndarray:
    """Permutation of ``targets`` by blended score, best first; ties keep the visual order."""
    w = stats.params.weight
    if w <= 0 or not stats.has_source(source) or len(targets) < 2:
        return np.arange(len(targets))
    f = blend(pct, stats.signal(source, targets), w)
    return np.argsort(-f, kind="stable")
