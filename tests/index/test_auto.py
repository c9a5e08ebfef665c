"""parse_memory and choose_index, table-driven; the memory models checked against built faiss indexes."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import create_index
from lookalike.index.auto import (
    choose_index,
    choose_nlist,
    choose_nprobe,
    estimate_bytes,
    parse_memory,
    pq_choices,
    resolve_spec,
)

G, M, K = 1 << 30, 1 << 20, 1 << 10


@pytest.mark.parametrize("text,expected", [
    ("4G", 4 * G), ("4g", 4 * G), (" 8 G ", 8 * G), ("4GB", 4 * G), ("2GiB", 2 * G), ("2gib", 2 * G),
    ("512M", 512 * M), ("512MB", 512 * M), ("64MiB", 64 * M), ("300K", 300 * K), ("300KB", 300 * K),
    ("1T", 1 << 40), ("1.5G", int(1.5 * G)), ("0.5K", 512), ("1024", 1024), ("100B", 100), (1024, 1024),
    (12_345_678_901, 12_345_678_901),
])
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "G", "4X", "-1G", "0", "0G", "4 GBs", "1e9", "abc", "4iB", "4.G", 0, -5])
def test_parse_memory_rejects_bad_sizes(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_memory(text)


@pytest.mark.parametrize("value", [None, 4.5, True, [4]])
def test_parse_memory_rejects_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        parse_memory(value)  # type: ignore[arg-type]


# (n, dim, budget) -> expected faiss factory; worked by hand from the memory models in auto.py
CASES = [
    (100, 512, "4G", "Flat"),
    (300, 96, "4G", "Flat"),
    (50_000, 512, "4G", "Flat"),  # exactly the small-n limit
    (50_001, 512, "4G", "HNSW32"),  # one past it, and n*dim is past the cheap-flat limit too
    (200_000, 64, "4G", "Flat"),  # many rows but short ones: brute force is still cheap
    (200_000, 512, "4G", "HNSW32"),
    (1_000_000, 512, "4G", "HNSW32"),  # 2.2 GiB with the graph
    (4_000_000, 128, "64G", "HNSW32"),
    (1_000_000, 512, "2G", "IVF4096,Flat"),  # graph does not fit (2.17 GiB), raw vectors do (1.92 GiB)
    (6_000_000, 128, "64G", "IVF8192,Flat"),  # fits, but past 5M an HNSW build takes too long
    (10_000_000, 512, "32G", "IVF16384,Flat"),
    (1_000_000, 512, "1G", "IVF4096,SQ8"),
    (50_000, 512, "50M", "IVF1024,SQ8"),
    (1000, 768, "1M", "IVF25,SQ8"),  # nlist capped so each list trains on >= 39 vectors
    (1_000_000, 512, "200M", "IVF4096,PQ128"),
    (1_000_000, 512, "100M", "IVF4096,PQ64"),
    (1_000_000, 512, "50M", "IVF4096,PQ32"),
    (10_000_000, 512, "4G", "IVF16384,PQ128"),
    (100_000_000, 512, "4G", "IVF32768,PQ32"),
    (200_000, 64, "10M", "IVF2048,PQ32"),  # PQ code capped at dim/2 bytes
    (2_000_000, 100, "100M", "IVF4096,PQ25"),  # m must divide dim
]


@pytest.mark.parametrize("n,dim,budget,factory", CASES, ids=[f"{c[0]}x{c[1]}@{c[2]}" for c in CASES])
def test_choose_index_table(n: int, dim: int, budget: str, factory: str) -> None:
    spec = choose_index(n, dim, budget)
    assert spec.backend == "faiss"
    assert spec.params["factory"] == factory
    assert spec.estimated_bytes is not None and 0 < spec.estimated_bytes <= parse_memory(budget)
    assert spec.reason
    if factory.startswith("IVF"):
        assert spec.params["nprobe"] == choose_nprobe(int(factory[3:].split(",")[0]))
    if factory.startswith("HNSW"):
        assert spec.params["efSearch"] >= 16


@pytest.mark.parametrize("n,dim,budget,match", [
    (1_000_000_000, 512, "4G", "even 1-byte PQ codes"),
    (100, 512, "10K", "too few to train"),
    (0, 512, "4G", "n >= 1"),
    (10, 0, "4G", "dim >= 1"),
])
def test_choose_index_refuses(n: int, dim: int, budget: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choose_index(n, dim, budget)


def test_more_memory_never_buys_a_smaller_code() -> None:
    ladder = ["IVF", "SQ8", "Flat", "HNSW"]  # from smallest to largest per-vector footprint, PQ below all
    def rank(factory: str) -> tuple[int, int]:
        if ",PQ" in factory:
            return (0, int(factory.split("PQ")[1]))
        return (1 + next(i for i, key in enumerate(ladder[1:]) if key in factory), 0)
    ranks = [rank(choose_index(2_000_000, 256, f"{mb}M").params["factory"]) for mb in (40, 80, 300, 800, 3000)]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("n,expected", [(1, 1), (100, 2), (10_000, 256), (1_000_000, 4096), (10**8, 32768)])
def test_choose_nlist(n: int, expected: int) -> None:
    assert choose_nlist(n) == expected


def test_pq_choices() -> None:
    assert pq_choices(512)[:3] == [128, 64, 32]
    assert pq_choices(100)[:3] == [50, 25, 20]
    assert pq_choices(7) == [1]


def test_resolve_spec() -> None:
    auto = resolve_spec("auto", 1000, 64, "4G", threads=1)
    assert auto.backend == "faiss" and auto.params == {"factory": "Flat", "threads": 1}
    explicit = resolve_spec("hnswlib", 1000, 64, "4G", M=8)
    assert explicit.backend == "hnswlib" and explicit.params == {"M": 8} and "requested" in explicit.reason


@pytest.mark.parametrize("factory,params", [
    ("Flat", {}), ("HNSW32", {}), ("IVF16,Flat", {"nprobe": 4}), ("IVF16,SQ8", {"nprobe": 4}),
])
def test_memory_models_match_built_indexes(factory: str, params: dict, vectors: np.ndarray) -> None:
    index = create_index("faiss", vectors.shape[1], factory=factory, **params)
    index.build(vectors)
    model = estimate_bytes("faiss", {"factory": factory}, len(vectors), vectors.shape[1])
    assert model is not None
    assert abs(model - index.nbytes()) / index.nbytes() < 0.15, (model, index.nbytes())
