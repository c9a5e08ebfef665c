"""Pick an index for (n, dim, memory budget), in the spirit of autofaiss; pure, no I/O.

The ladder, first rung that fits the budget wins:

1. exact faiss ``Flat`` while brute force is cheap (n <= 50k, or n*dim <= 50k*512): exact and fast enough;
2. ``HNSW32`` (faiss) up to 5M vectors: best recall per query time, but it keeps the raw vectors plus ~280
   bytes of graph per vector, and its build time grows past what one machine should spend above 5M;
3. ``IVF<nlist>,Flat``: the raw vectors without the graph;
4. ``IVF<nlist>,SQ8``: one byte per dimension, recall close to raw vectors at a quarter of the memory;
5. ``IVF<nlist>,PQ<m>`` with the largest code that fits (m bytes a vector; m divides dim, m <= min(128, dim/2));
otherwise ``ValueError``. nlist is the power of two nearest 4*sqrt(n), capped so each list trains on >= 39
vectors; nprobe scans ~1/16 of the lists (8..256).

``resolve_spec(name, ...)`` is what ``build_index`` calls: "auto" goes through ``choose_index`` (explicit params
override the chosen ones); any other name is taken as asked. "auto" is deliberately not in the INDEXES
registry: the registry maps names to classes that can ``load`` a file, and "auto" is a decision, not a format.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

FLAT_MAX_N = 50_000
FLAT_MAX_CELLS = 50_000 * 512  # n*dim: the cost of one brute-force query, ~25M multiply-adds
HNSW_MAX_N = 5_000_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
PQ_MAX_M = 128  # bytes per PQ code at 8 bits per sub-quantizer; more sub-quantizers make scans slow
PQ_KSUB = 256
MIN_POINTS_PER_LIST = 39  # faiss warns below this many training vectors per centroid

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class IndexSpec:
    """What to build: a registered backend name, its constructor params, and why."""

    backend: str
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    estimated_bytes: int | None = None


def parse_memory(value: str | int) -> int:
    """'4G', '512M', '1.5GB', '2GiB', '300K', '1024', 1024 -> bytes (binary units: K = 1024).

    ValueError for a malformed or non-positive size, TypeError for anything but str / int.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"memory size must be a str or an int, got {type(value).__name__}")
    if isinstance(value, int):
        size = value
    else:
        m = _MEMORY.match(str(value))
        if not m or (m.group(3) and m.group(3).upper() == "IB" and not m.group(2)):
            raise ValueError(f"not a memory size: {value!r} (write e.g. 4G, 512M, 2GiB or a byte count)")
        size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise ValueError(f"memory size must be positive, got {value!r}")
    return size


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# ---- memory models (bytes of the index structure; every faiss index here keeps 8-byte labels) ----
def flat_bytes(n: int, dim: int) -> int:
    return n * (4 * dim + 8)


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    # faiss HNSW: 2M int32 links on level 0, M per upper level (1/(M-1) upper levels on average),
    # plus an 8-byte offset and a 4-byte level per vector
    links = 4 * (2 * m + m / (m - 1)) + 12
    return int(n * (4 * dim + 8 + links))


def ivf_flat_bytes(n: int, dim: int, nlist: int) -> int:
    return n * (4 * dim + 8) + 4 * nlist * dim


def ivf_sq8_bytes(n: int, dim: int, nlist: int) -> int:
    return n * (dim + 8) + 4 * nlist * dim + 8 * dim  # + per-dimension min / range of the quantizer


def ivf_pq_bytes(n: int, dim: int, nlist: int, m: int) -> int:
    return n * (m + 8) + 4 * nlist * dim + 4 * PQ_KSUB * dim


def pq_choices(dim: int) -> list[int]:
    """PQ code sizes for dim, largest first: faiss needs m | dim; m <= dim/2 keeps >= 2 dims per sub-space."""
    return [m for m in range(min(PQ_MAX_M, max(1, dim // 2)), 0, -1) if dim % m == 0]


def choose_nlist(n: int) -> int:
    target = 4 * math.sqrt(n)
    nlist = 2 ** max(0, round(math.log2(target))) if target >= 1 else 1
    return max(1, min(nlist, n // MIN_POINTS_PER_LIST))


def choose_nprobe(nlist: int) -> int:
    return min(nlist, max(8, min(256, nlist // 16)))


def choose_index(n: int, dim: int, max_memory: str | int = "4G") -> IndexSpec:
    """The fastest index for n vectors of dim that fits ``max_memory`` at good recall (see module doc)."""
    if n < 1 or dim < 1:
        raise ValueError(f"need n >= 1 and dim >= 1, got n={n}, dim={dim}")
    budget = parse_memory(max_memory)
    fits = f"fits in {fmt_bytes(budget)}"

    size = flat_bytes(n, dim)
    if (n <= FLAT_MAX_N or n * dim <= FLAT_MAX_CELLS) and size <= budget:
        return IndexSpec("faiss", {"factory": "Flat"},
                         f"n={n:,} x dim={dim} is small enough for exact search; {fmt_bytes(size)} {fits}", size)

    size = hnsw_bytes(n, dim)
    if n <= HNSW_MAX_N and size <= budget:
        params = {"factory": f"HNSW{HNSW_M}", "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH}
        return IndexSpec("faiss", params, f"HNSW graph with raw vectors: {fmt_bytes(size)} {fits}", size)

    nlist = choose_nlist(n)
    nprobe = choose_nprobe(nlist)
    size = ivf_flat_bytes(n, dim, nlist)
    if size <= budget:
        why = ("n > 5M: HNSW would take too long to build" if n > HNSW_MAX_N
               else f"HNSW needs {fmt_bytes(hnsw_bytes(n, dim))}")
        return IndexSpec("faiss", {"factory": f"IVF{nlist},Flat", "nprobe": nprobe},
                         f"{why}; inverted lists over raw vectors: {fmt_bytes(size)} {fits}", size)

    size = ivf_sq8_bytes(n, dim, nlist)
    if size <= budget:
        return IndexSpec("faiss", {"factory": f"IVF{nlist},SQ8", "nprobe": nprobe},
                         f"raw vectors need {fmt_bytes(flat_bytes(n, dim))}; 8-bit scalar codes: "
                         f"{fmt_bytes(size)} {fits}", size)

    if n < PQ_KSUB:
        raise ValueError(f"{n} vectors need {fmt_bytes(flat_bytes(n, dim))} raw and are too few to train "
                         f"product quantization; raise max_memory above {fmt_bytes(budget)}")
    for m in pq_choices(dim):
        size = ivf_pq_bytes(n, dim, nlist, m)
        if size <= budget:
            return IndexSpec("faiss", {"factory": f"IVF{nlist},PQ{m}", "nprobe": nprobe},
                             f"raw vectors need {fmt_bytes(flat_bytes(n, dim))}; {m}-byte PQ codes: "
                             f"{fmt_bytes(size)} {fits}", size)
    smallest = pq_choices(dim)[-1]
    raise ValueError(f"no index fits {fmt_bytes(budget)}: even {smallest}-byte PQ codes need "
                     f"{fmt_bytes(ivf_pq_bytes(n, dim, nlist, smallest))} for n={n:,}, dim={dim}")


def estimate_bytes(backend: str, params: dict[str, Any], n: int, dim: int) -> int | None:
    """Best-effort memory estimate for an explicitly named index; None when the model does not cover it."""
    if backend == "exact":
        return flat_bytes(n, dim)
    if backend == "hnswlib":
        m = int(params.get("M", 32))
        return int(n * (4 * dim + 8 * m + 12 + 4 * (m + 1) / (m - 1)))
    if backend != "faiss":
        return None
    factory = str(params.get("factory", "Flat")).replace(" ", "")
    if factory == "Flat":
        return flat_bytes(n, dim)
    if m := re.fullmatch(r"HNSW(\d+)(,Flat)?", factory):
        return hnsw_bytes(n, dim, int(m.group(1)))
    if m := re.fullmatch(r"IVF(\d+),Flat", factory):
        return ivf_flat_bytes(n, dim, int(m.group(1)))
    if m := re.fullmatch(r"IVF(\d+),SQ8", factory):
        return ivf_sq8_bytes(n, dim, int(m.group(1)))
    if m := re.fullmatch(r"IVF(\d+),PQ(\d+)(x8)?(np)?", factory):
        return ivf_pq_bytes(n, dim, int(m.group(1)), int(m.group(2)))
    return None


def resolve_spec(name: str, n: int, dim: int, max_memory: str | int = "4G", **params: Any) -> IndexSpec:
    """``auto`` -> ``choose_index`` (``params`` override its choice); any other name -> built as asked."""
    if name == "auto":
        spec = choose_index(n, dim, max_memory)
        return replace(spec, params={**spec.params, **params}) if params else spec
    return IndexSpec(name, dict(params), f"requested {name!r}", estimate_bytes(name, params, n, dim))
