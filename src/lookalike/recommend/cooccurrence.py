"""Co-occurrence data for goes-with: (item, group) links such as room scenes, outfits or baskets.

Items that share a group "go together". Evaluation must never learn from the groups its test pairs come
from, so this module also makes group-disjoint folds: test items whose groups touch are kept in one fold,
and each fold names every group it holds out.
"""
from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class CoOccurrence:
    """Deduplicated (item, group) links; ``skipped`` counts the CSV rows that could not be used."""

    links: list[tuple[str, str]]
    skipped: int = 0
    _item_groups: dict[str, set[str]] = field(init=False, repr=False)
    _group_items: dict[str, set[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.links = sorted(set(self.links))
        self._item_groups, self._group_items = defaultdict(set), defaultdict(set)
        for item, group in self.links:
            self._item_groups[item].add(group)
            self._group_items[group].add(item)

    @classmethod
    def from_csv(cls, path: Path, item: str = "item", group: str = "group") -> CoOccurrence:
        """Read a CSV with an item column and a group column; rows with an empty cell are skipped and counted."""
        path = Path(path)
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            missing = [c for c in (item, group) if c not in cols]
            if missing:
                raise ValueError(f"{path} has no column(s) {missing}; its columns are {cols}. "
                                 "Name the item and group columns explicitly.")
            links, bad = [], 0
            for row in reader:
                a, b = (row.get(item) or "").strip(), (row.get(group) or "").strip()
                if a and b:
                    links.append((a, b))
                else:
                    bad += 1
        if bad:
            log.warning("%s: %d rows without an item or a group were skipped", path, bad)
        return cls(links, skipped=bad)

    @property
    def items(self) -> set[str]:
        return set(self._item_groups)

    @property
    def groups(self) -> set[str]:
        return set(self._group_items)

    def groups_of(self, item: str) -> set[str]:
        return set(self._item_groups.get(item, ()))

    def items_in(self, group: str) -> set[str]:
        return set(self._group_items.get(group, ()))

    def without_groups(self, groups: Collection[str]) -> CoOccurrence:
        """The same links minus every link of ``groups`` (the held-out groups of a fold)."""
        drop = set(groups)
        return CoOccurrence([(i, g) for i, g in self.links if g not in drop])

    def rename(self, mapping: dict[str, str]) -> CoOccurrence:
        """Map item keys (e.g. image paths) to product ids; links of unknown items are dropped."""
        return CoOccurrence([(mapping[i], g) for i, g in self.links if i in mapping])

    def pairs(self, src: Collection[str], tgt: Collection[str]) -> list[tuple[str, str]]:
        """Every (s, t) with s in ``src`` and t in ``tgt`` sharing at least one group, s != t."""
        src_set, tgt_set = set(src), set(tgt)
        out: set[tuple[str, str]] = set()
        for members in self._group_items.values():
            ss, ts = members & src_set, members & tgt_set
            out.update((s, t) for s in ss for t in ts if s != t)
        return sorted(out)


def group_folds(test_items: Iterable[str], co: CoOccurrence, n_folds: int = 5,
                seed: int = 0) -> list[tuple[list[str], set[str]]]:
    """Group-disjoint folds: ``[(test items, held-out groups), ...]``.

    Test items that share a group are one component and land in the same fold, and a fold holds out every
    group any of its items appears in; training for that fold must drop those groups
    (``co.without_groups``), so no test item has a single link left in training.
    """
    items = sorted(set(test_items))
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for it in items:
        for g in co.groups_of(it):
            parent[find("g:" + g)] = find("i:" + it)
    comps: dict[str, list[str]] = defaultdict(list)
    for it in items:
        comps[find("i:" + it)].append(it)
    order = list(comps.values())
    rng = np.random.default_rng(seed)
    rng.shuffle(order)  # type: ignore[arg-type]
    # biggest first, each into the currently smallest fold: balanced folds whatever the component sizes
    order.sort(key=len, reverse=True)
    folds: list[list[str]] = [[] for _ in range(min(n_folds, len(order)) or 1)]
    for comp in order:
        min(folds, key=len).extend(comp)
    out = []
    for fold in folds:
        held = set().union(*(co.groups_of(it) for it in fold)) if fold else set()
        out.append((sorted(fold), held))
    return out


@dataclass
class TypeAffinity:
    """How much more often two product types share a group (room, outfit, basket) than chance would have it:
    smoothed pointwise mutual information over groups, ``log((n_ab + 1) / (n_a * n_b / N + 1))``.

    Why: a category such as "dining table" mixes types (dining, coffee, bedside, outdoor and children's
    tables), and which of them go with a chair depends on the chair's own type (an outdoor chair stands by an
    outdoor table, an armchair by a coffee table). Types never seen in a group score 0.
    """

    groups: int = 0
    count: dict[str, int] = field(default_factory=dict)  # type -> groups holding it
    joint: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, type) -> groups holding both

    @classmethod
    def fit(cls, types: dict[str, str], links: CoOccurrence) -> TypeAffinity:
        """``types``: item -> type, for the items of ``links`` whose type is known."""
        out = cls()
        for group in sorted(links.groups):
            ts = sorted({types[i] for i in links.items_in(group) if types.get(i)})
            if not ts:
                continue
            out.groups += 1
            for a in ts:
                out.count[a] = out.count.get(a, 0) + 1
                for b in ts:
                    out.joint[(a, b)] = out.joint.get((a, b), 0) + 1
        return out

    def score(self, a: str | None, b: str | None) -> float:
        if not a or not b or a not in self.count or b not in self.count:
            return 0.0
        expected = self.count[a] * self.count[b] / self.groups
        return float(np.log((self.joint.get((a, b), 0) + 1) / (expected + 1)))

    def matrix(self, src: list[str | None], tgt: list[str | None]) -> np.ndarray:
        """(len(src), len(tgt)) scores, each distinct type pair computed once."""
        memo: dict[tuple[str | None, str | None], float] = {}
        out = np.empty((len(src), len(tgt)), np.float32)
        for i, a in enumerate(src):
            for j, b in enumerate(tgt):
                if (a, b) not in memo:
                    memo[(a, b)] = self.score(a, b)
                out[i, j] = memo[(a, b)]
        return out

    def state(self) -> dict[str, Any]:
        return {"groups": self.groups, "count": self.count, "joint": [[a, b, n] for (a, b), n in self.joint.items()]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TypeAffinity:
        return cls(int(state["groups"]), dict(state["count"]), {(a, b): int(n) for a, b, n in state["joint"]})
