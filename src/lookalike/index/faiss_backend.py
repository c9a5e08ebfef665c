"""The faiss backend: any index_factory string over inner product, with add, and remove and filtered
search where the factory allows them (see ``lookalike.index.backends`` for the shared contract)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index import INDEXES
from lookalike.index.backends import (
    ADD_CHUNK,
    _check_k,
    _default_threads,
    _empty,
    allowed_rows,
    as_labels,
    as_unit_rows,
    check_new_labels,
    meta_path,
    read_meta,
    topk_rows,
)
from lookalike.index.base import Index, Timer, pad_results
from lookalike.io_utils import atomic_write, write_json

log = logging.getLogger(__name__)

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
