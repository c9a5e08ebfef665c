"""Keep a Recommender's in-memory rows and precomputed similar lists exact after each catalogue change.

Rows are append-only while the process lives: a deleted product's row is marked dead in the attribute table
(so no mask ever selects it) and dropped from every list; a new product gets the next row. Every change is
first *planned* (the lists it replaces, computed with exact numpy over the live vectors), then written to
the store by the caller, and only then *applied* here, so a failed commit changes nothing in memory.

Why the lists stay exact without a rebuild:
- a new vector x enters row i's list iff it beats that list's k-th score (or the list is short), so one
  (n,) product ``V @ x`` finds every list it enters, and its own list is the top k of the same scores;
- a removed row only leaves the lists that held it; those few rows are recomputed from scratch.

Apply order matters for readers running concurrently (no lock on the read path): new rows are published
before any list points at them, and lists stop pointing at a deleted row before it is marked dead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lookalike.recommender import Recommender
    from lookalike.store.sql import ProductRow

log = logging.getLogger(__name__)

REFILL_BLOCK = 256  # rows recomputed per GEMM when a deletion empties slots in many lists


@dataclass
class Plan:
    """Lists a change replaces: row -> (neighbour rows (k,), scores (k,)), padded with -1 / -inf."""

    lists: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    dead: set[int] = field(default_factory=set)  # rows treated as gone while planning


class LiveLists:
    def __init__(self, rec: Recommender) -> None:
        self.rec = rec
        self.k = int(rec.pre_idx.shape[1])
        n, d = rec.vectors.shape
        cap = n + max(1024, n // 8)
        self._vec = np.zeros((cap, d), np.float32)
        self._vec[:n] = rec.vectors
        self._groups = np.full(cap, -1, np.int64)
        self._groups[:n] = rec.groups
        self._idx = np.full((cap, self.k), -1, np.int64)
        self._idx[:n] = rec.pre_idx
        self._sc = np.full((cap, self.k), -np.inf, np.float32)
        self._sc[:n] = rec.pre_scores
        self._pct = np.zeros((cap, self.k), np.float32)
        self._pct[:n] = rec.pre_pct
        self.n = n
        self.group_of: dict[str, int] = {}
        for pid, g in zip(rec.ids, rec.groups.tolist()):
            h = rec.products[pid].image_hash if pid in rec.products else None
            if h and g >= 0:
                self.group_of[h] = g
        self.next_group = int(rec.groups.max()) + 1 if n else 0
        self.same_category = bool(rec.same_category_build)
        self._publish()

    # ---- helpers ----------------------------------------------------------------------------------
    def _publish(self) -> None:
        """Point the Recommender at views of the (possibly regrown) buffers, one attribute at a time."""
        n, rec = self.n, self.rec
        rec.vectors = self._vec[:n]
        rec.groups = self._groups[:n]
        rec.pre_idx = self._idx[:n]
        rec.pre_scores = self._sc[:n]
        rec.pre_pct = self._pct[:n]

    def _grow(self, need: int) -> None:
        if need <= len(self._vec):
            return
        cap = max(need, 2 * len(self._vec))

        def grown(a: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, a.dtype)
            out[: self.n] = a[: self.n]
            return out

        self._vec, self._groups = grown(self._vec, 0), grown(self._groups, -1)
        self._idx, self._sc, self._pct = grown(self._idx, -1), grown(self._sc, -np.inf), grown(self._pct, 0)

    def group_code(self, image_hash: str | None) -> int:
        """The group of an image hash; an unseen hash gets a code no row has yet (assigned on apply)."""
        if image_hash and image_hash in self.group_of:
            return self.group_of[image_hash]
        return self.next_group

    def category_code(self, category: str | None) -> int:
        if category is None:
            return -1
        return self.rec.table.values.get("category", {}).get(str(category), -2)

    def _eligible(self, group: int, cat: int, exclude: set[int]) -> np.ndarray:
        """Rows that may appear in (or hold) the list of a row of ``group`` and category code ``cat``."""
        n = self.n
        m = self.rec.table.alive()[:n].copy()
        if group >= 0:
            m &= self._groups[:n] != group
        if self.same_category:
            m &= self.rec.table.codes("category")[:n] == cat
        if exclude:
            m[[r for r in exclude if r < n]] = False
        return m

    def _topk(self, s: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.full(self.k, -1, np.int64)
        sc = np.full(self.k, -np.inf, np.float32)
        cand = np.flatnonzero(mask)
        kk = min(self.k, len(cand))
        if kk == 0:
            return idx, sc
        cs = s[cand]
        part = np.argpartition(-cs, kk - 1)[:kk] if kk < len(cand) else np.arange(len(cand))
        order = part[np.argsort(-cs[part], kind="stable")]
        idx[:kk], sc[:kk] = cand[order], cs[order]
        return idx, sc

    def current(self, plan: Plan, row: int) -> tuple[np.ndarray, np.ndarray]:
        return plan.lists.get(row) or (self._idx[row], self._sc[row])

    # ---- planning ---------------------------------------------------------------------------------
    def plan_detach(self, row: int, plan: Plan) -> Plan:
        """Take ``row`` out of every list that holds it, refilling those lists from the live rows."""
        n = self.n
        plan.dead.add(row)
        holders = np.flatnonzero((self._idx[:n] == row).any(axis=1))
        holders = np.asarray([h for h in holders.tolist() if h not in plan.dead], np.int64)
        cats = self.rec.table.codes("category")
        for a in range(0, len(holders), REFILL_BLOCK):
            block = holders[a : a + REFILL_BLOCK]
            scores = self._vec[block] @ self._vec[:n].T
            for r, h in enumerate(block.tolist()):
                mask = self._eligible(int(self._groups[h]), int(cats[h]) if h < len(cats) else -1,
                                      plan.dead | {h})
                plan.lists[h] = self._topk(scores[r], mask)
        if row < n:
            plan.lists[row] = (np.full(self.k, -1, np.int64), np.full(self.k, -np.inf, np.float32))
        return plan

    def plan_attach(self, row: int, x: np.ndarray, group: int, cat: int, plan: Plan) -> Plan:
        """Give ``row`` (new, or an existing row with a new vector ``x``) its own list, and enter it into the
        lists of the rows it now beats."""
        n = self.n
        s = self._vec[:n] @ x
        mask = self._eligible(group, cat, plan.dead | {row})  # never itself, nor a row being deleted
        plan.dead.discard(row)
        own = self._topk(s, mask)
        thr = self._sc[:n, self.k - 1].copy()
        for r, (_, sc) in plan.lists.items():
            if r < n:
                thr[r] = sc[self.k - 1]
        for i in np.flatnonzero(mask & (s > thr)).tolist():
            idx, sc = self.current(plan, i)
            at = int(np.sum(sc >= s[i]))
            plan.lists[i] = (np.concatenate([idx[:at], [row], idx[at:]])[: self.k].astype(np.int64),
                             np.concatenate([sc[:at], [s[i]], sc[at:]])[: self.k].astype(np.float32))
        plan.lists[row] = own
        return plan

    # ---- applying ---------------------------------------------------------------------------------
    def _write_lists(self, plan: Plan) -> None:
        for r, (idx, sc) in plan.lists.items():
            pct = self.rec.scale.pct(np.where(np.isfinite(sc), sc, -1.0)).astype(np.float32)
            self._pct[r] = np.where(idx >= 0, pct, 0.0)
            self._sc[r] = sc
            self._idx[r] = idx

    def _assign_group(self, image_hash: str | None) -> int:
        g = self.group_code(image_hash)
        if g == self.next_group:
            self.next_group += 1
            if image_hash:
                self.group_of[image_hash] = g
        return g

    def apply_lists(self, plan: Plan) -> None:
        """Lists computed elsewhere (another process's write, read back from the store)."""
        self._write_lists(plan)

    def apply_new(self, product: ProductRow, x: np.ndarray, plan: Plan) -> int:
        rec, i = self.rec, self.n
        if len(rec.table) != i:
            raise RuntimeError(f"attribute table has {len(rec.table)} rows, lists have {i}: out of step")
        self._grow(i + 1)
        self._vec[i] = x
        self._groups[i] = self._assign_group(product.image_hash)
        self._idx[i], self._sc[i], self._pct[i] = -1, -np.inf, 0.0
        with rec.rows_lock:  # the table, vectors and groups grow by one row together
            rec.table.append([product.id], [product.category], [product.attributes])
            rec.ids.append(product.id)
            self.n = i + 1
            self._publish()
        rec.products[product.id] = product
        rec.pos[product.id] = i
        self._write_lists(plan)
        rec.n_live += 1
        return i

    def apply_vector(self, row: int, product: ProductRow, x: np.ndarray, plan: Plan) -> None:
        """An existing row's image changed: new vector and group, then the planned lists."""
        with self.rec.rows_lock:
            self._vec[row] = x
            self._groups[row] = self._assign_group(product.image_hash)
        self.apply_attributes(row, product)
        self._write_lists(plan)

    def apply_attributes(self, row: int, product: ProductRow, plan: Plan | None = None) -> None:
        self.rec.table.set_row(row, product.category, product.attributes)
        self.rec.products[product.id] = product
        if plan is not None:
            self._write_lists(plan)

    def apply_delete(self, row: int, product_id: str, plan: Plan) -> None:
        rec = self.rec
        self._write_lists(plan)  # first: no list points at the row any more
        rec.table.delete(row)
        rec.pos.pop(product_id, None)
        rec.products.pop(product_id, None)
        rec.n_live -= 1

    def list_ids(self, row: int) -> list[tuple[int, str, float, float]]:
        """(rank, similar id, score, pct) of a row's list, as stored."""
        ids = self.rec.ids
        return [(r, ids[j], float(self._sc[row, r]), float(self._pct[row, r]))
                for r, j in enumerate(self._idx[row].tolist()) if j >= 0]
