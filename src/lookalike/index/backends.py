"""Index backends: numpy brute force, faiss (any factory string), hnswlib and Annoy.

All of them rank by inner product over L2-normalised float32 rows (so scores are cosines) and address rows by
int64 labels. Each saves to one main file (``save(path)``) plus, where the library's own file cannot carry
them, small sidecars beside it (``<path>.meta.json``, ``<path>.labels.npy``); every file is written atomically
and the meta json last, so a reader never pairs a new index with a missing sidecar.

``search(queries, k, allowed=None)``: backends with the "filter" capability take ``allowed``, either a boolean
mask indexed by label (``mask[label]``; labels past its end are excluded) or an array of allowed labels.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.base import Index, Timer, pad_results
from lookalike.io_utils import atomic_write, read_json, write_json

log = logging.getLogger(__name__)

ADD_CHUNK = 65_536  # rows per add call: bounds temporary memory and paces the progress log


# ---- shared helpers -------------------------------------------------------------------------------
def as_unit_rows(x: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) C-contiguous float32 with unit rows; already-normalised input is returned without a copy."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # unlike linalg.norm, no (n, dim) temporary
    if len(x) and np.all(np.abs(norms - 1.0) < 1e-4):
        return x
    return x / np.maximum(norms, 1e-12)[:, None]  # zero rows stay zero instead of becoming NaN


def as_labels(labels: np.ndarray | None, n: int, start: int = 0) -> np.ndarray:
    """int64 labels, unique and >= 0 (-1 is the padding value); ``None`` -> start..start+n-1."""
    if labels is None:
        return np.arange(start, start + n, dtype=np.int64)
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"expected {n} labels, got shape {lab.shape}")
    if len(lab) and not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {lab.dtype}")
    lab = lab.astype(np.int64, copy=False)
    if len(lab) and lab.min() < 0:
        raise ValueError("labels must be >= 0 (-1 marks padding in results)")
    if len(np.unique(lab)) != len(lab):
        raise ValueError("labels must be unique")
    return lab


def check_new_labels(new: np.ndarray, present: np.ndarray) -> None:
    clash = new[np.isin(new, present)]
    if len(clash):
        raise ValueError(f"labels already in the index (remove them first): {clash[:10].tolist()}")


def allowed_rows(labels: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Boolean per entry of ``labels``: may it be returned under ``allowed`` (mask by label, or label list)?"""
    allowed = np.asarray(allowed)
    if allowed.dtype == bool:
        ok = labels < len(allowed)
        ok[ok] = allowed[labels[ok]]
        return ok
    return np.isin(labels, allowed.astype(np.int64, copy=False))


def meta_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".meta.json")


def read_meta(path: Path, backend: str) -> dict[str, Any]:
    meta = read_json(meta_path(path))
    if meta.get("backend") != backend:
        raise ValueError(f"{path} holds a {meta.get('backend')!r} index, not {backend!r}")
    return meta


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _default_threads() -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _empty(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((q, k), -np.inf, np.float32), np.full((q, k), -1, np.int64)


def topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row, sorted by descending score (k <= scores.shape[1])."""
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    s = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(part, order, axis=1)


# ---- exact ----------------------------------------------------------------------------------------
@INDEXES.register("exact", help="numpy brute force (float32 GEMM, exact); add, remove, filter")
class ExactIndex(Index):
    """Every query scored against every row; the reference the others are measured against."""

    name = "exact"
    ext = "npz"
    capabilities = frozenset({"add", "remove", "filter"})

    def __init__(self, dim: int, block_bytes: int = 64 << 20) -> None:
        super().__init__(dim, block_bytes=block_bytes)
        self.block_bytes = block_bytes
        self._x = np.zeros((0, dim), np.float32)  # capacity grows by doubling, so repeated adds stay cheap
        self._lab = np.zeros(0, np.int64)
        self._n = 0

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        with Timer(self.timings, "add"):
            x = as_unit_rows(vectors, self.dim)
            self._lab = as_labels(labels, len(x))
            self._x = x.copy() if x is vectors else x  # never alias the caller's array
            self._n = len(x)
        self.timings["train"] = 0.0

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        check_new_labels(lab, self._lab[: self._n])
        need = self._n + len(x)
        if need > len(self._x):
            cap = max(need, 2 * len(self._x), 1024)
            grown_x, grown_l = np.empty((cap, self.dim), np.float32), np.empty(cap, np.int64)
            grown_x[: self._n], grown_l[: self._n] = self._x[: self._n], self._lab[: self._n]
            self._x, self._lab = grown_x, grown_l
        self._x[self._n : need], self._lab[self._n : need] = x, lab
        self._n = need

    def remove(self, labels: np.ndarray) -> None:
        keep = ~np.isin(self._lab[: self._n], np.asarray(labels, np.int64))
        m = int(keep.sum())
        self._x[:m], self._lab[:m] = self._x[: self._n][keep], self._lab[: self._n][keep]
        self._n = m

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        x, lab = self._x[: self._n], self._lab[: self._n]
        if allowed is not None:
            rows = np.flatnonzero(allowed_rows(lab, allowed))
            x, lab = x[rows], lab[rows]
        scores, labels = _empty(len(q), k)
        if len(x) == 0:
            return scores, labels
        kk = min(k, len(x))
        step = max(1, self.block_bytes // (4 * len(x)))  # bounds the (block, n) score matrix
        for a in range(0, len(q), step):
            s, j = topk_rows(q[a : a + step] @ x.T, kk)
            scores[a : a + step, :kk], labels[a : a + step, :kk] = s, lab[j]
        return scores, labels

    def __len__(self) -> int:
        return self._n

    def nbytes(self) -> int:
        return int(self._x.nbytes + self._lab.nbytes)

    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
                np.savez(f, vectors=self._x[: self._n], labels=self._lab[: self._n])

        atomic_write(Path(path), write)
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params})

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        with np.load(path) as z:
            index._x, index._lab = z["vectors"], z["labels"]
        index._n = len(index._lab)
        return index



# ---- faiss ----------------------------------------------------------------------------------------
def _faiss() -> Any:
    # faiss bundles its own libgomp, which reads this once, when faiss is first imported. Spinning (ACTIVE)
    # workers were 5x slower to train PQ here with 2 threads on 2 shared cores; PASSIVE costs ~nothing alone.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import faiss  # imported on first use: listing the registry should not pay for loading faiss

    return faiss


def _can_remove(index: Any) -> bool:
    """Does this faiss index implement remove_ids? Probed with an empty selection, which changes nothing."""
    try:
        index.remove_ids(_faiss().IDSelectorBatch(np.zeros(0, np.int64)))
        return True
    except RuntimeError:
        return False


def _search_params(index: Any, sel: Any, keep: list[Any], widen: float = 1.0) -> Any | None:
    """SearchParameters carrying ``sel`` down to the index that scans, or None if that type cannot filter.

    faiss takes per-search parameters *instead of* the index's own, so nprobe / efSearch are copied in,
    multiplied by ``widen`` (1 / the share of rows the selector lets through): a filtered search then meets
    about as many eligible rows as an unfiltered one, instead of coming back short.
    ``keep`` holds the Python wrappers alive: SWIG does not own nested parameter objects.
    """
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _search_params(index.index, sel, keep, widen)
        if inner is None:
            return None
        p = faiss.SearchParametersPreTransform()
        p.index_params = inner
    elif isinstance(index, faiss.IndexRefine):
        inner = _search_params(index.base_index, sel, keep, widen)
        if inner is None:
            return None
        p = faiss.IndexRefineSearchParameters()
        p.k_factor, p.base_index_params = index.k_factor, inner
    elif isinstance(index, faiss.IndexIVF):
        p = faiss.SearchParametersIVF()
        p.nprobe = min(index.nlist, int(np.ceil(index.nprobe * widen)))
        p.max_codes, p.sel = index.max_codes, sel
    elif isinstance(index, faiss.IndexHNSW):
        p = faiss.SearchParametersHNSW()
        p.efSearch = min(max(index.ntotal, 1), int(np.ceil(index.hnsw.efSearch * widen)))
        p.sel = sel
    elif isinstance(index, faiss.IndexFlat):
        p = faiss.SearchParameters()
        p.sel = sel
    else:
        return None
    keep.append(p)
    return p


def _faiss_nbytes(index: Any) -> int:
    """Memory of a faiss index from its parts (serialising a large index just to measure it would copy it)."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        return 8 * index.ntotal + _faiss_nbytes(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        chain = sum(4 * index.chain.at(i).d_in * index.chain.at(i).d_out for i in range(index.chain.size()))
        return chain + _faiss_nbytes(index.index)
    if isinstance(index, faiss.IndexRefine):
        return _faiss_nbytes(index.base_index) + _faiss_nbytes(index.refine_index)
    pq = 4 * index.pq.centroids.size() if hasattr(index, "pq") else 0
    if isinstance(index, faiss.IndexIVF):
        return index.ntotal * (index.code_size + 8) + pq + _faiss_nbytes(index.quantizer)
    if isinstance(index, faiss.IndexHNSW):
        h = index.hnsw
        links = 4 * h.neighbors.size() + 8 * h.offsets.size() + 4 * h.levels.size()
        return links + _faiss_nbytes(index.storage)
    if isinstance(index, faiss.IndexFlatCodes):
        return index.ntotal * index.code_size + pq
    return len(faiss.serialize_index(index))


def _walk(index: Any) -> list[Any]:
    """The index and the indexes nested in it (wrapped, base, coarse quantizer), downcast."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    out = [index]
    for attr in ("index", "base_index", "quantizer"):
        child = getattr(index, attr, None)
        if isinstance(child, faiss.Index):
            out += _walk(child)
    return out


@INDEXES.register("faiss", help="faiss index_factory string, inner product (factory='Flat', 'HNSW32', "
                                "'IVF1024,PQ32', ...); add; remove and filter where the factory allows")
class FaissIndex(Index):
    """Any faiss factory string; labels live inside the faiss file.

    Labels are faiss ids: IVF indexes store them natively (and remove natively); every other type is wrapped in
    IndexIDMap2. Types that cannot ``remove_ids`` (HNSW, refine) get tombstones instead: removed rows stay in
    the graph, keep routing searches, and are masked by an IDSelector at search time, so results never hold
    them and no over-fetch is needed. Tombstones are saved in the meta sidecar; a removed label can be added
    again (a new row). Rebuild when many rows are tombstoned.
    """

    name = "faiss"
    ext = "faiss"
    capabilities = frozenset({"add", "remove", "filter"})  # the widest set; each instance narrows it
    EXACT_FILTER_MAX = 4096  # allowed sets this small are scored exactly from reconstructed vectors

    def __init__(self, dim: int, factory: str = "Flat", nprobe: int | None = None, efSearch: int | None = None,
                 efConstruction: int | None = None, train_size: int | None = None,
                 threads: int | None = None, seed: int = 0) -> None:
        given = {"factory": factory, "nprobe": nprobe, "efSearch": efSearch, "efConstruction": efConstruction,
                 "train_size": train_size, "threads": threads}
        super().__init__(dim, **{k: v for k, v in given.items() if v is not None}, seed=seed)
        if "idmap" in factory.lower():
            raise ValueError("leave IDMap out of the factory string: the backend manages labels itself")
        self.factory, self.seed, self.train_size = factory, seed, train_size
        self.threads = threads or _default_threads()
        _faiss().omp_set_num_threads(self.threads)  # process-wide in faiss; honours OMP_NUM_THREADS by default
        self._attach(self._fresh(), dead=None)

    # -- construction --
    def _fresh(self) -> Any:
        faiss = _faiss()
        try:
            base = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise ValueError(f"invalid faiss factory {self.factory!r} for dim {self.dim}: "
                             f"{str(e).splitlines()[0]}") from e
        for part in _walk(base):
            if hasattr(part, "do_polysemous_training"):
                # the factory turns on polysemous training for PQ (minutes of annealing); it only pays off
                # with polysemous search, which this backend never enables
                part.do_polysemous_training = False
        if faiss.try_extract_index_ivf(base) is not None and _can_remove(base):
            return base  # IVF stores ids itself; IDMap2 around it would break remove_ids
        return faiss.IndexIDMap2(base)

    def _attach(self, top: Any, dead: list[int] | None) -> None:
        faiss = _faiss()
        self._owner = top  # downcast_index returns a non-owning proxy: keep the owning one alive
        self._top = faiss.downcast_index(top)
        self._mapped = isinstance(self._top, faiss.IndexIDMap)
        self._core = faiss.downcast_index(self._top.index) if self._mapped else self._top
        self._ids: np.ndarray | None = None  # cached slot -> label map of IDMap2
        self._alive: np.ndarray | None = None
        if dead:
            self._alive = np.ones(self._top.ntotal, bool)
            self._alive[np.asarray(dead, np.int64)] = False
        self._native_remove = _can_remove(self._core)
        filterable = _search_params(self._core, None, []) is not None
        caps = {"add"} | ({"remove"} if self._native_remove or filterable else set())
        self.capabilities = frozenset(caps | ({"filter"} if filterable else set()))  # type: ignore[misc]
        space = faiss.ParameterSpace()
        for knob in ("nprobe", "efSearch"):
            if self.params.get(knob) is not None:
                try:
                    space.set_index_parameter(self._top, knob, self.params[knob])
                except RuntimeError as e:
                    raise ValueError(f"{knob} does not apply to factory {self.factory!r}") from e
        if self.params.get("efConstruction") is not None:
            for part in _walk(self._core):
                if isinstance(part, faiss.IndexHNSW):
                    part.hnsw.efConstruction = int(self.params["efConstruction"])

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        self._attach(self._fresh(), dead=None)
        with Timer(self.timings, "train"):
            if not self._top.is_trained:
                self._train(x)
        with Timer(self.timings, "add"):
            self._add(x, lab)

    def _train(self, x: np.ndarray) -> None:
        ivf = _faiss().try_extract_index_ivf(self._top)
        nlist = ivf.nlist if ivf is not None else 0
        if len(x) < max(nlist, 1):
            raise ValueError(f"faiss {self.factory!r} needs at least {nlist} vectors to train, got {len(x)}")
        size = min(len(x), self.train_size or max(100_000, 64 * nlist))
        rows = np.sort(np.random.default_rng(self.seed).choice(len(x), size, replace=False))
        log.info("training faiss %s on %d of %d vectors", self.factory, size, len(x))
        self._top.train(x[rows])

    def _add(self, x: np.ndarray, lab: np.ndarray) -> None:
        for a in range(0, len(x), ADD_CHUNK):
            self._top.add_with_ids(x[a : a + ADD_CHUNK], lab[a : a + ADD_CHUNK])
            if len(x) > ADD_CHUNK:
                log.info("faiss %s: added %d / %d", self.factory, min(a + ADD_CHUNK, len(x)), len(x))
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(len(x), bool)])
        self._ids = None

    # -- labels --
    def _slot_ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = _faiss().vector_to_array(self._top.id_map).astype(np.int64, copy=False)
        return self._ids

    def _present(self) -> np.ndarray:
        if self._mapped:
            ids = self._slot_ids()
            return ids if self._alive is None else ids[self._alive]
        faiss = _faiss()
        ivf = faiss.extract_index_ivf(self._top)
        lists = ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(ivf.nlist) if lists.list_size(i)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        if not self._top.is_trained:
            raise RuntimeError(f"faiss {self.factory!r} must be trained: call build() before add()")
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        check_new_labels(lab, self._present())
        self._add(x, lab)

    def remove(self, labels: np.ndarray) -> None:
        lab = np.ascontiguousarray(labels, dtype=np.int64)
        if self._native_remove:
            self._top.remove_ids(_faiss().IDSelectorBatch(len(lab), _faiss().swig_ptr(lab)))
            self._ids = None
        elif "remove" in self.capabilities:
            gone = np.isin(self._slot_ids(), lab)
            self._alive = ~gone if self._alive is None else self._alive & ~gone
        else:
            super().remove(labels)

    # -- search --
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        if allowed is not None and "filter" not in self.capabilities:
            raise NotImplementedError(f"faiss {self.factory!r} cannot filter searches")
        q = as_unit_rows(queries, self.dim)
        if len(q) == 0 or self._top.ntotal == 0:
            return _empty(len(q), k)
        faiss = _faiss()
        keep: list[Any] = []  # buffers that faiss reads through raw pointers during the search
        sel, share = None, 1.0
        if self._mapped:  # selectors address IDMap2 slots, since we search the index underneath it
            mask = None if self._alive is None else self._alive.copy()
            if allowed is not None:
                ok = allowed_rows(self._slot_ids(), allowed)
                mask = ok if mask is None else mask & ok
            if mask is not None:
                slots = np.flatnonzero(mask)
                if allowed is not None and len(slots) <= self.EXACT_FILTER_MAX:
                    exact = self._exact_over(q, slots, k)
                    if exact is not None:
                        return exact
                share = len(slots) / max(1, len(mask))
                keep.append(np.packbits(mask, bitorder="little"))
                sel = faiss.IDSelectorBitmap(len(keep[-1]), faiss.swig_ptr(keep[-1]))
        elif allowed is not None:  # IVF: ids are labels
            a = np.asarray(allowed)
            if a.dtype == bool:
                keep.append(np.packbits(a, bitorder="little"))
                sel = faiss.IDSelectorBitmap(len(keep[-1]), faiss.swig_ptr(keep[-1]))
                share = int(a.sum()) / max(1, len(self))
            else:
                keep.append(np.ascontiguousarray(a, dtype=np.int64))
                sel = faiss.IDSelectorBatch(len(keep[-1]), faiss.swig_ptr(keep[-1]))
                share = len(a) / max(1, len(self))
        widen = 1.0 / max(share, 1e-9) if allowed is not None else 1.0
        params = _search_params(self._core, sel, keep, min(widen, 1e6)) if sel is not None else None
        scores, ids = self._core.search(q, k, params=params)
        if self._mapped:
            ids = np.where(ids >= 0, self._slot_ids()[np.maximum(ids, 0)], -1)
        scores = scores.astype(np.float32, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def _exact_over(self, q: np.ndarray, slots: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Score a small allowed set exhaustively: a graph walk under a tight filter comes back short."""
        try:
            vecs = self._core.reconstruct_batch(slots)
        except RuntimeError:  # this index type cannot give its vectors back: use the selector instead
            return None
        s, j = topk_rows(q @ vecs.T, min(k, len(slots)))
        return pad_results(list(s), list(self._slot_ids()[slots][j]), k)

    def __len__(self) -> int:
        dead = 0 if self._alive is None else int((~self._alive).sum())
        return int(self._top.ntotal) - dead

    def nbytes(self) -> int:
        return _faiss_nbytes(self._top)

    def save(self, path: Path) -> None:
        atomic_write(Path(path), lambda tmp: _faiss().write_index(self._top, str(tmp)))
        dead = [] if self._alive is None else np.flatnonzero(~self._alive).tolist()
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params, "dead": dead})

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        index._attach(_faiss().read_index(str(path)), dead=meta.get("dead"))
        return index


# ---- hnswlib --------------------------------------------------------------------------------------
@INDEXES.register("hnswlib", help="hnswlib HNSW graph (M, ef_construction, ef); add, remove (mark_deleted), filter")
class HnswlibIndex(Index):
    """hnswlib over inner product; removal marks rows deleted (they keep routing, never returned)."""

    name = "hnswlib"
    ext = "hnsw"
    capabilities = frozenset({"add", "remove", "filter"})
    EXACT_FILTER_MAX = 4096  # allowed sets this small are scored exactly: faster, and never short of k

    def __init__(self, dim: int, M: int = 32, ef_construction: int = 200, ef: int = 128,
                 threads: int | None = None, seed: int = 100) -> None:
        super().__init__(dim, M=M, ef_construction=ef_construction, ef=ef, seed=seed,
                         **({"threads": threads} if threads else {}))
        self.M, self.ef_construction, self.ef, self.seed = M, ef_construction, ef, seed
        self.threads = threads or _default_threads()
        self._index: Any = None
        self._labels = np.zeros(0, np.int64)  # sorted live labels
        self._deleted = np.zeros(0, np.int64)  # sorted labels marked deleted (still in the graph)

    def _new(self, capacity: int) -> Any:
        import hnswlib

        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=max(capacity, 1), M=self.M, ef_construction=self.ef_construction,
                         random_seed=self.seed)
        index.set_ef(self.ef)
        index.set_num_threads(self.threads)
        return index

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        self.timings["train"] = 0.0
        with Timer(self.timings, "add"):
            self._index = self._new(len(x))
            self._labels, self._deleted = np.zeros(0, np.int64), np.zeros(0, np.int64)
            self._add(x, lab)

    def _add(self, x: np.ndarray, lab: np.ndarray) -> None:
        # re-adding a deleted label overwrites its old row in place, so it needs no new capacity
        need = self._index.element_count + int((~np.isin(lab, self._deleted)).sum())
        if need > self._index.max_elements:
            self._index.resize_index(max(need, 2 * self._index.max_elements))
        for a in range(0, len(x), ADD_CHUNK):
            self._index.add_items(x[a : a + ADD_CHUNK], lab[a : a + ADD_CHUNK], num_threads=self.threads)
            if len(x) > ADD_CHUNK:
                log.info("hnswlib: added %d / %d", min(a + ADD_CHUNK, len(x)), len(x))
        self._labels = np.union1d(self._labels, lab)
        self._deleted = np.setdiff1d(self._deleted, lab)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        check_new_labels(lab, self._labels)
        if self._index is None:
            self._index = self._new(len(x))
        self._add(x, lab)

    def remove(self, labels: np.ndarray) -> None:
        gone = np.intersect1d(np.asarray(labels, np.int64), self._labels)
        for label in gone.tolist():
            self._index.mark_deleted(label)
        self._labels = np.setdiff1d(self._labels, gone)
        self._deleted = np.union1d(self._deleted, gone)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        live = self._labels
        if allowed is not None:
            live = live[allowed_rows(live, allowed)]
        if len(q) == 0 or len(live) == 0:
            return _empty(len(q), k)
        kk = min(k, len(live))
        if allowed is not None and len(live) <= self.EXACT_FILTER_MAX:
            s, j = topk_rows(q @ self._index.get_items(live, return_type="numpy").T, kk)
            return pad_results(list(s), list(live[j]), k)
        filt = set(live.tolist()).__contains__ if allowed is not None else None
        threads = 1 if filt else self.threads  # the filter is a Python callback: threads would fight for the GIL
        try:
            lab, dist = self._index.knn_query(q, k=kk, num_threads=threads, filter=filt)
            return pad_results(list(1.0 - dist), list(lab.astype(np.int64)), k)
        except RuntimeError:  # some query found fewer than kk: retry one by one with smaller k
            scores, labels = [], []
            for row in q:
                s, lab = np.zeros(0, np.float32), np.zeros(0, np.int64)
                kq = kk
                while kq >= 1:
                    try:
                        lab, dist = self._index.knn_query(row[None], k=kq, num_threads=1, filter=filt)
                        s, lab = 1.0 - dist[0], lab[0].astype(np.int64)
                        break
                    except RuntimeError:
                        kq //= 2
                scores.append(s)
                labels.append(lab)
            return pad_results(scores, labels, k)

    def __len__(self) -> int:
        return len(self._labels)

    def nbytes(self) -> int:
        if self._index is None:
            return 0
        per_row = 4 * self.dim + 8 * self.M + 12  # vector + level-0 links + label, as hnswlib lays them out
        spare = self._index.max_elements - self._index.element_count
        return int(self._index.index_file_size() + spare * per_row + 8 * (len(self._labels) + len(self._deleted)))

    def save(self, path: Path) -> None:
        if self._index is None:
            raise RuntimeError("nothing to save: build() first")
        atomic_write(Path(path), lambda tmp: self._index.save_index(str(tmp)))
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params,
                                     "deleted": self._deleted.tolist()})

    @classmethod
    def load(cls, path: Path) -> HnswlibIndex:
        import hnswlib

        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        index._index = hnswlib.Index(space="ip", dim=index.dim)
        index._index.load_index(str(path))
        index._index.set_ef(index.ef)
        index._index.set_num_threads(index.threads)
        index._deleted = np.asarray(meta.get("deleted", []), np.int64)
        index._labels = np.setdiff1d(np.asarray(index._index.get_ids_list(), np.int64), index._deleted)
        return index


# ---- annoy ----------------------------------------------------------------------------------------
@INDEXES.register("annoy", help="Annoy random-projection forest (mmap'd file; n_trees, search_k); build only")
class AnnoyIndex(Index):
    """Annoy, angular metric; items are row positions and the labels array is saved beside the file."""

    name = "annoy"
    ext = "annoy"
    capabilities = frozenset()

    def __init__(self, dim: int, n_trees: int = 64, search_k: int = -1, seed: int = 0, threads: int = -1) -> None:
        super().__init__(dim, n_trees=n_trees, search_k=search_k, seed=seed, threads=threads)
        self.n_trees, self.search_k, self.seed, self.threads = n_trees, search_k, seed, threads
        self._index: Any = None
        self._labels = np.zeros(0, np.int64)
        self._file: Path | None = None

    def _new(self) -> Any:
        from annoy import AnnoyIndex as Annoy

        index = Annoy(self.dim, "angular")
        index.set_seed(self.seed)
        return index

    def build(self, vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        x = as_unit_rows(vectors, self.dim)
        lab = as_labels(labels, len(x))
        index = self._new()
        with Timer(self.timings, "add"):
            for i, row in enumerate(x):
                index.add_item(i, row)
                if (i + 1) % 100_000 == 0:
                    log.info("annoy: added %d / %d", i + 1, len(x))
        with Timer(self.timings, "train"):
            log.info("annoy: building %d trees over %d vectors", self.n_trees, len(x))
            index.build(self.n_trees, n_jobs=self.threads)
        self._index, self._labels, self._file = index, lab, None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _check_k(k)
        q = as_unit_rows(queries, self.dim)
        if self._index is None or len(self._labels) == 0:
            return _empty(len(q), k)
        scores, labels = [], []
        for row in q:
            rows, dist = self._index.get_nns_by_vector(row, k, search_k=self.search_k, include_distances=True)
            d = np.asarray(dist, np.float32)
            scores.append(1.0 - d * d / 2.0)  # angular distance is sqrt(2 - 2 cos) on unit vectors
            labels.append(self._labels[np.asarray(rows, np.int64)])
        return pad_results(scores, labels, k)

    def __len__(self) -> int:
        return len(self._labels)

    def nbytes(self) -> int:
        if self._file is not None and self._file.exists():
            return self._file.stat().st_size + self._labels.nbytes
        # annoy keeps one node per item plus ~2n/K split nodes per tree, K ~ dim + 2 items per leaf
        node = 4 * (self.dim + 3)
        nodes = len(self._labels) * (1 + 2 * self.n_trees / (self.dim + 2))
        return int(nodes * node + self._labels.nbytes)

    def save(self, path: Path) -> None:
        if self._index is None:
            raise RuntimeError("nothing to save: build() first")
        path = Path(path)

        def write_labels(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, self._labels)

        atomic_write(path.with_name(path.name + ".labels.npy"), write_labels)
        # annoy re-mmaps the file it just wrote; the mapping survives the rename onto ``path``
        atomic_write(path, lambda tmp: self._index.save(str(tmp)))
        self._file = path
        write_json(meta_path(path), {"backend": self.name, "dim": self.dim, "params": self.params})

    @classmethod
    def load(cls, path: Path) -> AnnoyIndex:
        path = Path(path)
        meta = read_meta(path, cls.name)
        index = cls(meta["dim"], **meta["params"])
        index._index = index._new()
        index._index.load(str(path))  # mmap: pages come in on demand and are shared between processes
        index._labels = np.load(path.with_name(path.name + ".labels.npy"))
        index._file = path
        return index
