"""Goes-with in a living catalogue: a loaded model follows the products added, changed or deleted after it
was fitted, whether by the live API (in this process, or in another one through the change feed) or by
``lookalike update``.

Why no refit: a fit learns channel weights per category pair, and a few new products do not move those.
What a new product lacks is only its own features. So each changed product is described again with the
channels the model already has: the same Gram backbone and weights, the colour histogram, the title and
attribute tokens, and the product type when the fit used one. For the unfitted default model that means
the build vector instead. Deleted products leave the candidate lists. A product with no readable image
still gets no goes-with list, as at fit time.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from lookalike.recommend.goes_with import BUILD_VECTORS, GoesWith, vector_features, workspace_texts
from lookalike.recommend.goes_with_features import ItemFeatures, describe_items, tokens

if TYPE_CHECKING:
    from lookalike.recommender import Recommender
    from lookalike.store.sql import ProductRow

log = logging.getLogger(__name__)

NO_GRAM = ("random", "not used", None)  # gram_weights values that mean no pretrained weights were used


class TrackedProducts(dict[str, "ProductRow"]):
    """The Recommender's products by id, remembering which ids were set or removed since the last ``drain``:
    every live write (live/lists.py, the follower, the updater) goes through item assignment or ``pop``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def __setitem__(self, key: str, value: ProductRow) -> None:
        super().__setitem__(key, value)
        with self._lock:
            self._changed.add(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        with self._lock:
            self._changed.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        with self._lock:
            self._changed.add(key)
        return super().pop(key, *default)

    def drain(self) -> set[str]:
        """The ids changed since the last call."""
        with self._lock:
            out, self._changed = self._changed, set()
        return out


def _texts(products: list[ProductRow]) -> dict[str, list[str]]:
    return workspace_texts([p.title for p in products], [p.attributes for p in products])


def describe_like(model: GoesWith, rec: Recommender, ids: list[str]) -> ItemFeatures:
    """Features of ``ids`` (current products) in ``model``'s channels; products that cannot be described
    (no vector, no readable image) are left out."""
    feats = model.feats
    if feats.info.get("source") == BUILD_VECTORS:
        with rec.rows_lock:
            keep = [p for p in ids if p in rec.pos]
            vecs = rec.vectors[[rec.pos[p] for p in keep]]
        rows = [rec.products[p] for p in keep]
        return vector_features(keep, [r.category for r in rows], vecs, [r.title for r in rows],
                               [r.attributes for r in rows])
    paths = {p: rec.image_path(p) for p in ids}
    keep = [p for p in ids if paths[p] is not None]
    rows = [rec.products[p] for p in keep]
    source = feats.info.get("gram_weights")
    gram = any(k.startswith("gram") for k in feats.visual)
    attr = model.info.get("type_attribute")
    new, failed = describe_items(keep, [r.category for r in rows], [paths[p] for p in keep], _texts(rows),
                                 pretrained=source not in NO_GRAM, gram=gram,
                                 types=[r.attributes.get(attr) or None for r in rows] if attr else None)
    if gram and new.ids and new.info.get("gram_weights") != source:
        # other weights give other Gram statistics: cosines against the fitted items would mean nothing
        log.warning("goes-with: the fit used %s weights, now %s resolves; %d changed product(s) left out "
                    "until `lookalike goes-with WS --fit`", source, new.info.get("gram_weights"), len(new.ids))
        return new.subset([])
    if failed or len(keep) < len(ids):
        log.info("goes-with: %d changed product(s) have no readable image and get no goes-with list",
                 len(ids) - len(new.ids))
    return new


def stale_ids(model: GoesWith, rec: Recommender) -> set[str]:
    """Products that changed since ``model`` was fitted: deleted, new (with an image), or with another
    category, title, attributes or image than the model describes."""
    feats, hashes = model.feats, model.image_hashes
    out = {pid for pid in feats.ids if pid not in rec.products}
    for pid, p in list(rec.products.items()):
        i = feats.pos.get(pid)
        if i is None:
            if p.image:
                out.add(pid)
            continue
        texts = _texts([p])
        if (feats.categories[i] != p.category or (hashes[i] is not None and hashes[i] != p.image_hash)
                or any(feats.text[k][i] != tokens(texts[k][0]) for k in feats.text if k in texts)):
            out.add(pid)
    return out


def catch_up(model: GoesWith, rec: Recommender, changed: Iterable[str]) -> GoesWith:
    """``model`` with every ``changed`` product described again from ``rec`` (or dropped when deleted)."""
    changed = set(changed)
    present = sorted(p for p in changed if p in rec.products)
    new = describe_like(model, rec, present)
    out = model.with_items(new, changed, [rec.products[p].image_hash for p in new.ids])
    log.info("goes-with caught up with %d changed product(s): %d described, %d removed", len(changed),
             len(new.ids), len(changed) - len(new.ids))
    return out
