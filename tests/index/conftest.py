"""Clustered unit vectors shared by the index tests (generated, never stored)."""
from __future__ import annotations

import numpy as np
import pytest


def clustered(n: int, dim: int, clusters: int = 50, spread: float = 1.0, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around random centres, L2-normalised: neighbourhoods shaped like embeddings'."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The plainest possible reference: full score matrix, full sort."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    s = q.astype(np.float64) @ b.astype(np.float64).T
    order = np.argsort(-s, axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.fixture(scope="session")
def vectors() -> np.ndarray:
    return clustered(5000, 64)
