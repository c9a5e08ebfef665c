"""The Index contract: inner-product search over L2-normalised float32 vectors, faiss's results shape.

Callers address vectors by int64 labels (row positions they own); ``search`` returns
``(scores float32 (q, k), labels int64 (q, k))`` padded with -inf / -1 when fewer than k exist.
Callers ask ``capabilities`` ("add", "remove", "filter") instead of checking types.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

log = logging.getLogger(__name__)


class Index(ABC):
    name: ClassVar[str] = "index"
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, dim: int, **params: Any) -> None:
        self.dim = dim
        self.params: dict[str, Any] = params
        self.timings: dict[str, float] = {}

    @abstractmethod
    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Index ``vectors``; labels default to 0..n-1."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product."""

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        raise NotImplementedError(f"index {self.name!r} cannot add; rebuild it instead")

    def remove(self, labels: np.ndarray) -> None:
        raise NotImplementedError(f"index {self.name!r} cannot remove; rebuild it instead")

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def nbytes(self) -> int:
        """Memory used by the index structure."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the index to ``path`` (atomically)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path) -> Index: ...

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "params": self.params, "n": len(self), "dim": self.dim,
                "bytes": self.nbytes(), "capabilities": sorted(self.capabilities), "timings_s": self.timings}


def pad_results(scores: list[np.ndarray], labels: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged per-query results into (q, k) arrays padded with -inf / -1."""
    s = np.full((len(scores), k), -np.inf, dtype=np.float32)
    lab = np.full((len(scores), k), -1, dtype=np.int64)
    for i, (sc, lb) in enumerate(zip(scores, labels)):
        m = min(k, len(sc))
        s[i, :m], lab[i, :m] = sc[:m], lb[:m]
    return s, lab


class Timer:
    def __init__(self, sink: dict[str, float], key: str) -> None:
        self.sink, self.key = sink, key

    def __enter__(self) -> Self:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink[self.key] = round(time.perf_counter() - self.t0, 4)
