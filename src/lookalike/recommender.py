"""``Recommender``: similar products, photo search and search by example, over one built workspace.

Everything heavy (store rows, vectors, index, encoder, precomputed lists) loads once in ``open``;
queries are then numpy work on in-memory arrays, so the service's hot path never touches the disk.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.catalogue import resolve_image_path
from lookalike.encoders import Encoder, l2_normalise
from lookalike.index.build import load_index
from lookalike.pipeline import EXACT_SIMILAR_LIMIT, codes, open_encoder
from lookalike.recommend.filters import AttributeTable, FilterSpec, fetch_filtered, select_with_crowding
from lookalike.recommend.similarity_pct import SimilarityScale
from lookalike.recommend.topk import topk_query
from lookalike.settings import Settings
from lookalike.store.sql import ProductRow, Store
from lookalike.store.vectors import VectorStore
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)


class UnknownProductError(KeyError):
    def __init__(self, product_id: str) -> None:
        super().__init__(product_id)
        self.product_id = product_id

    def __str__(self) -> str:
        return f"no product with id {self.product_id!r}"


@dataclass
class Recommendation:
    product: ProductRow
    score: float
    similarity_pct: float


@dataclass
class SearchResult:
    predicted_category: tuple[str, float] | None
    items: list[Recommendation]
    timings: dict[str, float] = field(default_factory=dict)
    searched_categories: list[str] | None = None


class Recommender:
    def __init__(self, workspace: Workspace, store: Store, encoder_name: str, ids: list[str], vectors: np.ndarray,
                 products: dict[str, ProductRow], scale: SimilarityScale, settings: Settings,
                 precomputed: tuple[np.ndarray, np.ndarray], build_info: dict[str, Any]) -> None:
        self.workspace, self.store, self.encoder_name, self.settings = workspace, store, encoder_name, settings
        self.ids, self.vectors, self.products, self.scale = ids, vectors, products, scale
        self.pos = {pid: i for i, pid in enumerate(ids)}
        self.table = AttributeTable.from_rows(ids, [products[i].category for i in ids],
                                              [products[i].attributes for i in ids])
        self.pre_idx, self.pre_scores = precomputed
        self.pre_pct = scale.pct(self.pre_scores)
        self.build_info = build_info
        self.same_category_build = bool(build_info.get("same_category"))
        self.groups = codes([products[i].image_hash for i in ids])
        self.catalogue_root = Path(workspace.read(workspace.catalogue_json).get("root", workspace.root))
        self._encoder: Encoder | None = None
        self.index = load_index(workspace.index_dir(encoder_name)) if len(ids) > EXACT_SIMILAR_LIMIT else None

    # ---- loading ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, workspace: Path, store_url: str | None = None, settings: Settings | None = None,
             load_encoder: bool = True) -> Recommender:
        ws = Workspace(workspace)
        info = ws.read(ws.build_json)
        if not info:
            raise FileNotFoundError(f"{ws.root} has no build.json: run `lookalike build CATALOGUE --workspace {ws.root}`")
        settings = settings or Settings(workspace=ws.root)
        store = Store.for_workspace(ws.root, store_url or settings.store_url)
        enc_name = info["encoder"]
        t0 = time.perf_counter()
        products = {p.id: p for p in store.iter_products()}
        idx_dir = ws.index_dir(enc_name)
        all_ids, all_vecs = VectorStore(ws.vectors_dir(enc_name)).load(keep=set(products))
        # keep the index's label order so labels of an ANN index map straight to rows
        order = ws.read(idx_dir / "ids.json").get("ids", all_ids)
        where = {pid: i for i, pid in enumerate(all_ids)}
        in_order = set(order)
        ids = [pid for pid in order if pid in where] + [pid for pid in all_ids if pid not in in_order]
        vecs = all_vecs[[where[p] for p in ids]] if ids else all_vecs
        pre = cls._load_precomputed(store, enc_name, ids, int(info.get("k", 20)))
        rec = cls(ws, store, enc_name, ids, vecs, products, SimilarityScale.load(idx_dir / "similarity.json"),
                  settings, pre, info)
        if load_encoder:
            rec.encoder  # noqa: B018 - load the model now, not on the first request
        log.info("opened %s: %d products, encoder %s, in %.1fs", ws.root, len(ids), enc_name, time.perf_counter() - t0)
        return rec

    @staticmethod
    def _load_precomputed(store: Store, encoder: str, ids: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        pos = {pid: i for i, pid in enumerate(ids)}
        idx = np.full((len(ids), k), -1, np.int64)
        scores = np.full((len(ids), k), -np.inf, np.float32)
        for pid, rank, sid, score in store.similar_table(encoder):
            i, j = pos.get(pid), pos.get(sid)
            if i is not None and j is not None and rank < k:
                idx[i, rank], scores[i, rank] = j, score
        return idx, scores

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = open_encoder(self.encoder_name, self.workspace.root)
        return self._encoder

    # ---- lookups ----------------------------------------------------------------------------------
    def product(self, product_id: str) -> ProductRow | None:
        return self.products.get(product_id)

    def image_path(self, product_id: str) -> Path | None:
        p = self.products.get(product_id)
        if p is None or not p.image:
            return None
        try:
            path = resolve_image_path(self.workspace.root, self.catalogue_root, p.image)
        except ValueError:
            return None
        return path if path.is_file() else None

    def _items(self, rows: np.ndarray, scores: np.ndarray, pct: np.ndarray | None = None) -> list[Recommendation]:
        pct = self.scale.pct(scores) if pct is None else pct
        return [Recommendation(self.products[self.ids[j]], round(min(float(s), 1.0), 6), round(float(p), 1))
                for j, s, p in zip(rows, scores, pct) if j >= 0]

    # ---- similar by id ----------------------------------------------------------------------------
    def similar(self, product_id: str, k: int = 10, filters: FilterSpec | None = None,
                same_category: bool = False) -> list[Recommendation]:
        i = self.pos.get(product_id)
        if i is None:
            raise UnknownProductError(product_id)
        spec = filters or FilterSpec()
        pre = self.pre_idx[i]
        pre = pre[pre >= 0]
        if same_category and not self.same_category_build:
            pre = pre[self.table.codes("category")[pre] == self.table.codes("category")[i]]
        picked = select_with_crowding(pre, spec, self.table, k)
        if len(picked) >= k or len(pre) == len(self.ids) - 1:
            rank = {j: r for r, j in enumerate(self.pre_idx[i])}
            sc = np.asarray([self.pre_scores[i, rank[j]] for j in picked], np.float32)
            pc = np.asarray([self.pre_pct[i, rank[j]] for j in picked], np.float32)
            return self._items(picked, sc, pc)
        mask = self.table.mask(spec) & (self.groups != self.groups[i])
        mask[i] = False
        if same_category:
            mask &= self.table.codes("category") == self.table.codes("category")[i]
        return self._search_vector(self.vectors[i], k, spec, mask)

    def _search_vector(self, q: np.ndarray, k: int, spec: FilterSpec, mask: np.ndarray) -> list[Recommendation]:
        """Live exact search restricted to ``mask``; crowding over-fetches until k are left or all are seen."""
        allowed = int(mask.sum())
        found: dict[int, float] = {}

        def search(fetch: int) -> np.ndarray:
            s, j = topk_query(self.vectors, q[None, :], min(fetch, max(allowed, 1)), mask=mask)
            found.update(zip(j[0].tolist(), s[0].tolist()))
            return j[0]

        picked = fetch_filtered(search, spec, self.table, k, total=allowed, first_fetch=4 * k if spec.max_per else k)
        return self._items(picked, np.asarray([found[int(x)] for x in picked], np.float32))

    # ---- search by photo / by example -------------------------------------------------------------
    def route(self, predictions: list[tuple[str, float]] | None) -> list[str] | None:
        """Nozama's routing: the top type when confident, the top few when not, everything when unsure."""
        if not predictions:
            return None
        thr = self.settings.route_threshold
        if predictions[0][1] >= thr:
            return [predictions[0][0]]
        top = predictions[: self.settings.route_top_types]
        if sum(p for _, p in top) >= thr:
            return [label for label, _ in top]
        return None

    def search(self, image: Image.Image | np.ndarray, k: int = 10, filters: FilterSpec | None = None,
               category: str | None = None, route: str = "auto") -> SearchResult:
        if route not in ("auto", "none"):
            raise ValueError(f"route must be 'auto' or 'none', got {route!r}")
        timings: dict[str, float] = {}
        t = time.perf_counter()
        predicted: list[tuple[str, float]] | None = None
        if isinstance(image, np.ndarray):
            q = l2_normalise(image.reshape(1, -1))[0]
        else:
            enc = self.encoder
            want_pred = route == "auto" and category is None
            if want_pred and hasattr(enc, "encode_and_predict"):
                vecs, preds = enc.encode_and_predict([image], top=max(3, self.settings.route_top_types))
                predicted = preds[0] if preds else None
            else:
                vecs = enc.encode([image], show_progress=False, num_workers=0)
                if want_pred:
                    preds = enc.predict_category([image], top=max(3, self.settings.route_top_types))
                    predicted = preds[0] if preds else None
            q = vecs[0]
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        spec = filters or FilterSpec()
        mask = self.table.mask(spec)
        cats = [category] if category else self.route(predicted)
        if cats:
            mask_cat = self.table.mask(FilterSpec(equals={"category": set(cats)}))
            if (mask & mask_cat).any():
                mask = mask & mask_cat
        items = self._search_vector(q, k, spec, mask)
        timings["search"] = time.perf_counter() - t
        top = (predicted[0][0], float(predicted[0][1])) if predicted else None
        return SearchResult(top, items, timings, cats)

    def search_by_ids(self, positive: list[str], negative: list[str] | None = None, k: int = 10,
                      filters: FilterSpec | None = None) -> list[Recommendation]:
        """More like ``positive``, less like ``negative`` (Rocchio-style arithmetic on the vectors)."""
        negative = negative or []
        if not positive:
            raise ValueError("give at least one positive product id")
        for pid in [*positive, *negative]:
            if pid not in self.pos:
                raise UnknownProductError(pid)
        q = self.vectors[[self.pos[p] for p in positive]].mean(0)
        if negative:
            q = q - 0.5 * self.vectors[[self.pos[p] for p in negative]].mean(0)
        q = l2_normalise(q[None, :])[0]
        spec = filters or FilterSpec()
        mask = self.table.mask(spec)
        mask[[self.pos[p] for p in [*positive, *negative]]] = False
        return self._search_vector(q, k, spec, mask)
