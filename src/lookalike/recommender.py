"""``Recommender``: similar products, photo search and search by example, over one built workspace.

Everything heavy (store rows, vectors, index, encoder, precomputed lists) loads once in ``open``;
queries are then numpy work on in-memory arrays, so the service's hot path never touches the disk.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookalike.catalogue import resolve_image_path
from lookalike.encoders import Encoder, l2_normalise
from lookalike.index.build import load_index
from lookalike.live.event_feed import EventFeed
from lookalike.pipeline import EXACT_SIMILAR_LIMIT, codes, open_encoder
from lookalike.recommend.filters import AttributeTable, FilterSpec, fetch_filtered, select_with_crowding
from lookalike.recommend.goes_with import GoesWith, UnknownCategoryError, vector_features
from lookalike.recommend.goes_with import create_recipe as create_goes_with_recipe
from lookalike.recommend.goes_with import default_model as default_goes_with
from lookalike.recommend.goes_with_live import TrackedProducts, catch_up, stale_ids
from lookalike.recommend.rerank import ClickStats, RerankParams, rerank_order
from lookalike.recommend.router import CategoryRouter, load_router
from lookalike.recommend.similarity_pct import SimilarityScale
from lookalike.recommend.topk import topk_query
from lookalike.settings import Settings
from lookalike.store import changes
from lookalike.store.journal import flush_vectors
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


def _aslist(x: Sequence[Any] | np.ndarray) -> list[Any]:
    return x.tolist() if isinstance(x, np.ndarray) else list(x)


def _round(x: float, scale: float) -> float:
    """``round(x, digits)`` at a tenth of the cost (that one formats a decimal string): the hot path's."""
    return round(x * scale) / scale if math.isfinite(x) else x


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
        self.ids, self.vectors, self.scale = ids, vectors, scale
        # tracked: the goes-with model catches up with the ids live writes touched (goes_with_live.py)
        self.products = products if isinstance(products, TrackedProducts) else TrackedProducts(products)
        self.pos = {pid: i for i, pid in enumerate(ids)}
        self.table = AttributeTable.from_rows(ids, [products[i].category for i in ids],
                                              [products[i].attributes for i in ids])
        self.pre_idx, self.pre_scores = precomputed
        self.pre_pct = scale.pct(self.pre_scores)
        self.build_info = build_info
        self.same_category_build = bool(build_info.get("same_category"))
        self.groups = codes([products[i].image_hash for i in ids])
        self.change_seq = 0  # the change-feed position this state includes (store/changes.py)
        self.n_live = len(ids)  # rows minus deleted ones (rows are append-only while serving: live/lists.py)
        # held by live updates while they grow the row arrays, and by the searches that read several of them
        # at once (mask, groups, vectors), so those never see one array a row longer than another
        self.rows_lock = threading.RLock()
        self.feedback = ClickStats(RerankParams(
            weight=settings.rerank_weight, prior_strength=settings.rerank_prior_strength,
            prior_ctr=settings.rerank_prior_ctr, exploration=settings.rerank_exploration,
            position_eta=settings.rerank_position_eta))
        self.catalogue_root = Path(workspace.read(workspace.catalogue_json).get("root", workspace.root))
        self._encoder: Encoder | None = None
        # a fitted category router (recommend/router.py) predicts the category for route=auto when present
        self.router: CategoryRouter | None = load_router(workspace.root)
        self._goes_with: GoesWith | None = None
        self._goes_with_lock = threading.Lock()
        self.event_feed: EventFeed | None = None  # other processes' events, polled by live/follower.py
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
        # the feed position first, then the state: a write landing in between is replayed, harmlessly twice
        change_seq = changes.last_seq(store, enc_name)
        products = {p.id: p for p in store.iter_products()}
        idx_dir = ws.index_dir(enc_name)
        flush_vectors(ws.root, store, enc_name)  # vectors of live changes a crash left only in the journal
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
        rec.change_seq = change_seq
        if load_encoder:
            rec.encoder  # noqa: B018 - load the model now, not on the first request
            if rec.router is not None:
                rec.router.encoder  # noqa: B018
        top = store.max_event_id()  # first: an event stored meanwhile is folded in by the feed, once
        rec.feedback.load(store.event_counts(up_to=top))
        rec.event_feed = EventFeed(rec.feedback, store, top)
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
            changed = VectorStore(self.workspace.vectors_dir(self.encoder_name)).changed_since(self._encoder.identity())
            if changed:
                log.warning("%s changed since this workspace was built (%s): queries are encoded by the new model "
                            "and compared with the old one's vectors; run `lookalike build` again",
                            self.encoder_name, ", ".join(changed))
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

    def _items(self, rows: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
               pct: Sequence[float] | np.ndarray | None = None) -> list[Recommendation]:
        pct = self.scale.pct(np.asarray(scores, np.float32)) if pct is None else pct
        ids, products = self.ids, self.products
        out = []
        # plain Python numbers: on ten items, numpy scalars and small-array calls cost more than the work
        for j, s, p in zip(_aslist(rows), _aslist(scores), _aslist(pct)):
            row = products.get(ids[j]) if j >= 0 else None
            if row is not None:
                out.append(Recommendation(row, _round(min(s, 1.0), 1e6), _round(p, 10.0)))
        return out

    # ---- similar by id ----------------------------------------------------------------------------
    def similar(self, product_id: str, k: int = 10, filters: FilterSpec | None = None,
                same_category: bool = False, rerank: str = "ctr") -> list[Recommendation]:
        """The k most similar products; with ``rerank="ctr"`` and clicks recorded for this product, the
        candidates (at least the whole precomputed list) are re-ranked by recommend/rerank.py."""
        if rerank not in ("ctr", "none"):
            raise ValueError(f"rerank must be 'ctr' or 'none', got {rerank!r}")
        if rerank == "none" or not self.feedback.has_source(product_id) or self.feedback.params.weight <= 0:
            return self._visual_similar(product_id, k, filters, same_category)
        pool = self._visual_similar(product_id, max(k, self.pre_idx.shape[1]), filters, same_category)
        order = rerank_order(self.feedback, product_id, [r.product.id for r in pool],
                             np.asarray([r.similarity_pct for r in pool], np.float32))
        return [pool[i] for i in order[:k]]

    def _visual_similar(self, product_id: str, k: int = 10, filters: FilterSpec | None = None,
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
        if len(picked) >= k or len(pre) == self.n_live - 1:
            rank = {j: c for c, j in enumerate(self.pre_idx[i].tolist())}
            cols = [rank[j] for j in picked.tolist()]
            scores, pct = self.pre_scores[i].tolist(), self.pre_pct[i].tolist()
            return self._items(picked, [scores[c] for c in cols], [pct[c] for c in cols])
        with self.rows_lock:
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
    def route_threshold(self) -> float:
        """LOOKALIKE_ROUTE_THRESHOLD when set, else the router's or the encoder's calibrated one, else the default."""
        if "route_threshold" not in self.settings.model_fields_set:
            calibrated = getattr(self.router or self._encoder, "route_threshold", None)
            if calibrated is not None:
                return float(calibrated)
        return self.settings.route_threshold

    def route(self, predictions: list[tuple[str, float]] | None) -> list[str] | None:
        """Nozama's routing: the top type when confident, the top few when not, everything when unsure."""
        if not predictions:
            return None
        thr = self.route_threshold()
        if predictions[0][1] >= thr:
            return [predictions[0][0]]
        top = predictions[: self.settings.route_top_types]
        if sum(p for _, p in top) >= thr:
            return [label for label, _ in top]
        return None

    def _encode_and_predict(self, image: Image.Image, want_pred: bool) -> tuple[np.ndarray, list[tuple[str, float]] | None]:
        """The photo's vector and, for routing, its categories: the router's when the workspace has one, else the
        encoder's own. The router alone, not its product with a trained encoder's guess: on the dev photos the
        pooled-feature router gets 0.52 category accuracy alone and 0.43 combined with the studio-trained encoder
        (0.29 alone), whose studio cues it was fitted to get away from."""
        enc, top = self.encoder, max(3, self.settings.route_top_types)
        if not want_pred:
            return enc.encode([image], show_progress=False, num_workers=0)[0], None
        if self.router is not None:
            return enc.encode([image], show_progress=False, num_workers=0)[0], self.router.predict([image], top=top)[0]
        if hasattr(enc, "encode_and_predict"):
            vecs, preds = enc.encode_and_predict([image], top=top)
        else:
            vecs, preds = enc.encode([image], show_progress=False, num_workers=0), enc.predict_category([image], top=top)
        return vecs[0], (preds[0] if preds else None)

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
            q, predicted = self._encode_and_predict(image, route == "auto" and category is None)
        timings["encode"] = time.perf_counter() - t
        t = time.perf_counter()
        spec = filters or FilterSpec()
        cats = [category] if category else self.route(predicted)
        with self.rows_lock:
            mask = self.table.mask(spec)
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
        spec = filters or FilterSpec()
        with self.rows_lock:
            for pid in [*positive, *negative]:
                if pid not in self.pos:
                    raise UnknownProductError(pid)
            q = self.vectors[[self.pos[p] for p in positive]].mean(0)
            if negative:
                q = q - 0.5 * self.vectors[[self.pos[p] for p in negative]].mean(0)
            q = l2_normalise(q[None, :])[0]
            mask = self.table.mask(spec)
            mask[[self.pos[p] for p in [*positive, *negative]]] = False
            return self._search_vector(q, k, spec, mask)

    # ---- goes with (cross-category) ---------------------------------------------------------------
    def goes_with_model(self) -> GoesWith:
        """The model fitted by `lookalike goes-with WS --fit` (WS/models/goes-with), else one over the build
        vectors and text tokens with equal weights; loaded on first use, then kept in step with the products
        live writes add, change or delete (recommend/goes_with_live.py)."""
        with self._goes_with_lock:
            changed = self.products.drain()  # first: a write landing meanwhile is caught up next time
            model = self._goes_with
            if model is None:
                try:
                    model = GoesWith.load(self.workspace.models_dir("goes-with"))
                    changed |= stale_ids(model, self)  # changes made before this process started
                except FileNotFoundError:
                    with self.rows_lock:
                        ids = [pid for pid in self.ids[: len(self.vectors)] if pid in self.products]
                        vecs = self.vectors[[self.pos[p] for p in ids]]
                    rows = [self.products[p] for p in ids]
                    model = default_goes_with(vector_features(ids, [r.category for r in rows], vecs,
                                                              [r.title for r in rows], [r.attributes for r in rows]),
                                              [r.image_hash for r in rows])
            if changed:
                model = catch_up(model, self, changed)
            self._goes_with = model
        return model

    def goes_with(self, product_id: str, category: str, k: int = 10,
                  recipe: str | None = None) -> list[Recommendation]:
        """Products of ``category`` that go with ``product_id``; UnknownCategoryError lists the valid ones."""
        if product_id not in self.products:
            raise UnknownProductError(product_id)
        model = self.goes_with_model()
        override = None
        if recipe and recipe != model.recipe.name:
            override = create_goes_with_recipe(recipe)
            if override.needs_links:
                raise ValueError(f"recipe {recipe!r} must be fitted first: lookalike goes-with WS --fit "
                                 f"--recipe {recipe} --links CSV")
        if not model.has(product_id):
            if category not in model.categories:
                raise UnknownCategoryError(category, model.categories)
            return []  # a product without a readable image has no features
        hits = model.query(product_id, category, k, recipe=override)
        return [Recommendation(self.products[h.product_id], round(h.score, 6), h.pct)
                for h in hits if h.product_id in self.products]
