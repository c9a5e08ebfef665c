"""Attribute filters and crowding over a columnar in-memory view of the catalogue.

``FilterSpec`` is what a caller asks for ("gender:Women", "exclude colour:Black", "at most 2 per brand").
``AttributeTable`` holds, per attribute, one int32 code per product, so ``mask(spec)`` is a few vectorised
comparisons over all rows. ``select_with_crowding`` applies the spec to a ranked candidate list, and
``fetch_filtered`` runs the over-fetch loop that approximate indexes need to still return k results.

All values compare as strings (``str(value)``); a missing or None attribute matches no ``equals`` filter and
is never excluded. The pseudo-attributes ``category`` and ``id`` name the product's category and id and take
precedence over product attributes of the same name.

Over-fetch contract (for indexes that cannot filter): ask the index for ``fetch`` candidates, call
``select_with_crowding``; while ``needs_more(selected, k, exhausted)`` grow ``fetch`` and ask again, where
``exhausted`` means the index returned fewer than ``fetch`` hits or ``fetch`` already covers every row.
``fetch_filtered`` implements exactly that loop.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PSEUDO = ("category", "id")


def _as_list(x: Iterable[str] | str | None) -> list[str]:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def _split(item: str, kind: str, example: str) -> tuple[str, str]:
    attr, sep, value = str(item).partition(":")
    attr, value = attr.strip(), value.strip()
    if not sep:
        raise ValueError(f"{kind} {item!r} must be written attr:value, e.g. {example}")
    if not attr:
        raise ValueError(f"{kind} {item!r} has no attribute name before ':'; write it as attr:value, e.g. {example}")
    if not value:
        raise ValueError(f"{kind} {item!r} has no value after ':'; write it as attr:value, e.g. {example}")
    return attr, value


@dataclass
class FilterSpec:
    equals: dict[str, set[str]] = field(default_factory=dict)    # attr -> allowed values (OR); attrs AND
    exclude: dict[str, set[str]] = field(default_factory=dict)   # attr -> values that drop a row
    allow_ids: set[str] | None = None                            # None: every id is allowed
    deny_ids: set[str] = field(default_factory=set)
    max_per: dict[str, int] = field(default_factory=dict)       # attr -> at most n results per value

    @classmethod
    def parse(
        cls,
        filters: Sequence[str] | str = (),
        excludes: Sequence[str] | str = (),
        max_per: Sequence[str] | str = (),
        allow_ids: Iterable[str] | None = None,
        deny_ids: Iterable[str] | None = None,
    ) -> FilterSpec:
        """Parse "attr:value" filters/excludes (same attr repeated = OR) and "attr:n" crowding limits."""
        spec = cls()
        for kind, items, target in (("filter", filters, spec.equals), ("exclude", excludes, spec.exclude)):
            for item in _as_list(items):
                attr, value = _split(item, kind, "gender:Women")
                target.setdefault(attr, set()).add(value)
        for item in _as_list(max_per):
            attr, value = _split(item, "max_per", "brand:2")
            try:
                n = int(value)
            except ValueError:
                n = 0
            if n < 1:
                raise ValueError(f"max_per {item!r} needs a positive whole number after ':', e.g. {attr}:2")
            if attr in spec.max_per and spec.max_per[attr] != n:
                raise ValueError(f"max_per {attr!r} is given twice ({spec.max_per[attr]} and {n}); keep one")
            spec.max_per[attr] = n
        if allow_ids is not None:
            spec.allow_ids = {str(i) for i in _as_list(allow_ids)}
        spec.deny_ids = {str(i) for i in _as_list(deny_ids)}
        return spec

    @property
    def is_empty(self) -> bool:
        """True when the spec neither drops rows nor crowds them."""
        return not self.filters_rows and not self.max_per

    @property
    def filters_rows(self) -> bool:
        """True when ``AttributeTable.mask`` can drop rows (anything but crowding)."""
        return bool(self.equals or self.exclude or self.deny_ids or self.allow_ids is not None)

    def to_query_dict(self) -> dict[str, list[str]]:
        """Deterministic, JSON-ready form (sorted; empty parts left out): ``FilterSpec.parse(**d) == self``."""
        d: dict[str, Any] = {
            "filters": sorted(f"{a}:{v}" for a, vs in self.equals.items() for v in vs),
            "excludes": sorted(f"{a}:{v}" for a, vs in self.exclude.items() for v in vs),
            "max_per": sorted(f"{a}:{n}" for a, n in self.max_per.items()),
            "deny_ids": sorted(self.deny_ids),
        }
        d = {key: v for key, v in d.items() if v}
        if self.allow_ids is not None:
            d["allow_ids"] = sorted(self.allow_ids)
        return d


def _norm(value: Any) -> str | None:
    return None if value is None else str(value)


class AttributeTable:
    """Per-attribute int32 codes (-1 = missing) over product rows, plus id -> row and a live flag."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.values: dict[str, dict[str, int]] = {}    # attr -> value -> code
        self._codes: dict[str, np.ndarray] = {}        # attr -> int32 codes, capacity-sized
        self._alive = np.zeros(0, dtype=bool)
        self._n = 0

    @classmethod
    def from_rows(cls, ids: Sequence[str], categories: Sequence[str | None],
                  attributes: Sequence[dict[str, Any]]) -> AttributeTable:
        table = cls()
        table.append(ids, categories, attributes)
        return table

    def __len__(self) -> int:
        return self._n

    @property
    def attributes(self) -> list[str]:
        return sorted(self._codes)

    def codes(self, attr: str) -> np.ndarray:
        """The (n,) int32 codes of ``attr``; all -1 for an attribute no row has."""
        col = self._codes.get(attr)
        return col[: self._n] if col is not None else np.full(self._n, -1, dtype=np.int32)

    def alive(self) -> np.ndarray:
        return self._alive[: self._n]

    def _grow(self, n: int) -> None:
        cap = len(self._alive)
        if n <= cap:
            return
        new = max(n, 2 * cap, 64)
        alive = np.zeros(new, dtype=bool)
        alive[:cap] = self._alive
        self._alive = alive
        for attr, col in self._codes.items():
            grown = np.full(new, -1, dtype=np.int32)
            grown[:cap] = col
            self._codes[attr] = grown

    def _code(self, attr: str, value: str) -> int:
        vals = self.values.setdefault(attr, {})
        code = vals.get(value)
        if code is None:
            code = vals[value] = len(vals)
        if attr not in self._codes:
            self._codes[attr] = np.full(len(self._alive), -1, dtype=np.int32)
        return code

    def _write(self, i: int, category: str | None, attributes: dict[str, Any]) -> None:
        row = {k: v for k, v in (attributes or {}).items() if k not in PSEUDO}
        row["category"] = category
        for attr, col in self._codes.items():
            if attr not in row:
                col[i] = -1
        for attr, value in row.items():
            s = _norm(value)
            if s is None:
                if attr in self._codes:
                    self._codes[attr][i] = -1
                continue
            code = self._code(attr, s)
            self._codes[attr][i] = code

    def append(self, ids: Sequence[str], categories: Sequence[str | None],
               attributes: Sequence[dict[str, Any]]) -> np.ndarray:
        """Add rows; returns their row numbers. A live id already present raises (use set_row)."""
        if not (len(ids) == len(categories) == len(attributes)):
            raise ValueError(f"ids, categories and attributes differ in length: "
                             f"{len(ids)}, {len(categories)}, {len(attributes)}")
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            dup = next(i for i, c in Counter(ids).items() if c > 1)
            raise ValueError(f"product id {dup!r} appears twice in one append; give each product once")
        for pid in ids:
            old = self.row_of.get(pid)
            if old is not None and self._alive[old]:
                raise ValueError(f"product id {pid!r} is already row {old}; update it with set_row")
        start = self._n
        self._grow(start + len(ids))
        for j, (pid, cat, attrs) in enumerate(zip(ids, categories, attributes)):
            i = start + j
            self.ids.append(pid)
            self.row_of[pid] = i
            self._alive[i] = True
            self._write(i, _norm(cat), attrs)
        self._n = start + len(ids)
        return np.arange(start, self._n, dtype=np.int64)

    def set_row(self, i: int, category: str | None, attributes: dict[str, Any]) -> None:
        """Replace row i's category and attributes (attributes left out become missing)."""
        if not 0 <= i < self._n:
            raise IndexError(f"row {i} is out of range for a table of {self._n} rows")
        self._write(i, _norm(category), attributes)

    def delete(self, i: int) -> None:
        """Row i never matches a mask again; its id may be appended anew."""
        if not 0 <= i < self._n:
            raise IndexError(f"row {i} is out of range for a table of {self._n} rows")
        self._alive[i] = False

    def _rows_for_ids(self, ids: Iterable[str]) -> np.ndarray:
        return np.fromiter((self.row_of[i] for i in ids if i in self.row_of), dtype=np.int64)

    def _isin(self, attr: str, values: set[str], rows: np.ndarray | None) -> np.ndarray:
        col = self.codes(attr) if rows is None else self.codes(attr)[rows]
        vals = self.values.get(attr, {})
        codes = [vals[v] for v in values if v in vals]
        if not codes:
            return np.zeros(len(col), dtype=bool)
        if len(codes) <= 8:  # a few compares beat a table lookup (~3 us each at 50k rows)
            m = col == codes[0]
            for c in codes[1:]:
                m |= col == c
            return m
        lut = np.zeros(len(vals) + 1, dtype=bool)   # slot 0 is "missing" (-1 + 1)
        lut[np.asarray(codes) + 1] = True
        return np.take(lut, col + 1)

    def mask(self, spec: FilterSpec, rows: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of the live rows that pass ``spec`` (over all rows, or over ``rows`` if given)."""
        m = self.alive().copy() if rows is None else self.alive()[rows]
        for attr, values in spec.equals.items():
            if attr == "id":
                m &= self._id_mask(values, rows)
            else:
                m &= self._isin(attr, values, rows)
        for attr, values in spec.exclude.items():
            if attr == "id":
                m &= ~self._id_mask(values, rows)
            else:
                m &= ~self._isin(attr, values, rows)
        if spec.allow_ids is not None:
            m &= self._id_mask(spec.allow_ids, rows)
        if spec.deny_ids:
            m &= ~self._id_mask(spec.deny_ids, rows)
        return m

    def _id_mask(self, ids: Iterable[str], rows: np.ndarray | None) -> np.ndarray:
        full = np.zeros(self._n, dtype=bool)
        full[self._rows_for_ids(ids)] = True
        return full if rows is None else full[rows]


def select_with_crowding(candidates_idx: np.ndarray, spec: FilterSpec, table: AttributeTable, k: int) -> np.ndarray:
    """Up to k rows of the ranked candidates (order kept) that pass the spec, at most n per value of
    each ``max_per`` attribute. -1 padding is ignored; a row with no value for a crowded attribute is not
    limited by it. Crowding counts only rows that are kept."""
    cand = np.asarray(candidates_idx, dtype=np.int64).ravel()
    cand = cand[(cand >= 0) & (cand < len(table))]
    if k <= 0 or cand.size == 0:
        return np.zeros(0, dtype=np.int64)
    cand = cand[table.mask(spec, cand)]
    if not spec.max_per:
        return cand[:k]
    limits = list(spec.max_per.items())
    if len(limits) == 1:
        attr, n = limits[0]
        codes = table.codes(attr)[cand]
        # rank of each candidate among the earlier ones with the same value: a stable sort by code
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        first = np.searchsorted(sc, sc, side="left")
        seen = np.empty_like(order)
        seen[order] = np.arange(len(order)) - first
        return cand[(codes < 0) | (seen < n)][:k]
    cols = [table.codes(a)[cand] for a, _ in limits]
    counts: list[dict[int, int]] = [{} for _ in limits]
    keep: list[int] = []
    for j in range(len(cand)):
        vals = [int(c[j]) for c in cols]
        if any(v >= 0 and cnt.get(v, 0) >= n for v, cnt, (_, n) in zip(vals, counts, limits)):
            continue
        for v, cnt in zip(vals, counts):
            if v >= 0:
                cnt[v] = cnt.get(v, 0) + 1
        keep.append(j)
        if len(keep) == k:
            break
    return cand[np.asarray(keep, dtype=np.int64)]


def needs_more(selected: np.ndarray, k: int, exhausted: bool) -> bool:
    """Whether an over-fetching caller must ask the index for more candidates."""
    return len(selected) < k and not exhausted


def fetch_filtered(search: Callable[[int], np.ndarray], spec: FilterSpec, table: AttributeTable, k: int,
                   total: int | None = None, first_fetch: int | None = None, growth: int = 4) -> np.ndarray:
    """Over-fetch loop for searches that cannot filter: returns k rows whenever k pass in the full set.

    search(fetch) returns the ranked row numbers of the best ``fetch`` hits (-1 padded or shorter when
    fewer exist). total is how many rows the search covers (default: the table's length).
    """
    total = len(table) if total is None else total
    if k <= 0 or total <= 0:
        return np.zeros(0, dtype=np.int64)
    if first_fetch is None:
        # start from the share of rows that pass, so a selective filter does not take many rounds
        share = float(table.mask(spec).mean()) if spec.filters_rows and len(table) else 1.0
        first_fetch = math.ceil(2 * k / max(share, 1.0 / max(total, 1))) + (4 * k if spec.max_per else 0)
    fetch = max(k, min(first_fetch, total))
    while True:
        hits = np.asarray(search(fetch), dtype=np.int64).ravel()
        selected = select_with_crowding(hits, spec, table, k)
        exhausted = int((hits >= 0).sum()) < fetch or fetch >= total
        if not needs_more(selected, k, exhausted):
            return selected
        log.debug("filtered search kept %d of %d hits, fetching %d", len(selected), fetch, fetch * growth)
        fetch = min(total, fetch * max(2, growth))
