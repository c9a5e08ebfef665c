"""The catalogue as the service browses it: paging, category, title words and attribute filters, in memory.

``Store.list_products`` filters attributes in Python over every matching ORM row (JSON operators are not
portable), which costs about a second per request at 44k products. The service holds the same snapshot of
products as its Recommender for its whole life, so it indexes them once at load time: category and
attribute values map to sorted row numbers, and a request intersects a few small arrays.

Semantics match ``Store.list_products``: products ordered by id; ``category`` exact; every word of ``q``
must appear in the title (case-insensitive) or equal the id; attribute values compare as strings.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lookalike.store.sql import ProductRow

# An attribute is offered as a storefront filter when it has at most this many distinct values.
MAX_FACET_VALUES = 60

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class Facets:
    """Catalogue-wide facts the storefront and the validators need."""

    products: int
    categories: list[tuple[str, int]]  # (category, count), by name
    attributes: dict[str, list[tuple[str, int]]]  # filterable attribute -> [(value, count)] by count
    attribute_keys: set[str]  # every attribute key seen, filterable or not


class Listing:
    def __init__(self, rows: Iterable[ProductRow]) -> None:
        ordered = sorted(rows, key=lambda r: r.id)
        self.ids = [r.id for r in ordered]
        self._titles = [(r.title or "").lower() for r in ordered]
        cats: dict[str, list[int]] = {}
        attrs: dict[str, dict[str, list[int]]] = {}
        for i, r in enumerate(ordered):
            if r.category is not None:
                cats.setdefault(r.category, []).append(i)
            for k, v in (r.attributes or {}).items():
                if v is not None and not isinstance(v, (dict, list)):
                    attrs.setdefault(k, {}).setdefault(str(v), []).append(i)
        self._by_cat = {c: np.asarray(ix, dtype=np.int64) for c, ix in cats.items()}
        self._by_attr = {k: {v: np.asarray(ix, dtype=np.int64) for v, ix in vals.items()} for k, vals in attrs.items()}
        counts = {k: Counter({v: len(ix) for v, ix in vals.items()}) for k, vals in attrs.items()}
        self.facets = Facets(
            products=len(ordered),
            categories=sorted((c, len(ix)) for c, ix in cats.items()),
            attributes={k: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
                        for k, c in sorted(counts.items()) if 1 < len(c) <= MAX_FACET_VALUES},
            attribute_keys=set(attrs),
        )

    def query(self, limit: int = 24, offset: int = 0, category: str | None = None, q: str | None = None,
              attrs: dict[str, str] | None = None) -> tuple[list[str], int]:
        """Ids of one page, and how many match in total."""
        sel: np.ndarray | None = None  # None: every row
        if category:
            sel = self._by_cat.get(category, _EMPTY)
        for k, v in (attrs or {}).items():
            rows = self._by_attr.get(k, {}).get(str(v), _EMPTY)
            sel = rows if sel is None else np.intersect1d(sel, rows, assume_unique=True)
        words = (q or "").split()
        if words:
            lowered = [w.lower() for w in words]
            cand = range(len(self.ids)) if sel is None else sel.tolist()
            hits = [i for i in cand
                    if all(lw in self._titles[i] or self.ids[i] == w for w, lw in zip(words, lowered))]
            sel = np.asarray(hits, dtype=np.int64)
        if sel is None:
            return self.ids[offset : offset + limit], len(self.ids)
        return [self.ids[i] for i in sel[offset : offset + limit]], len(sel)
