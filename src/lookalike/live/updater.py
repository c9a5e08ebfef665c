"""``Updater``: add, change and delete products of a served workspace, without a rebuild.

Each change runs under one writer lock (a thread lock, and ``store.changes.process_lock`` across processes):
replay what other processes wrote meanwhile (live/follower.py), plan the new lists in memory (``LiveLists``),
commit the product row, the journal entry, the change-feed entry and the replaced similar lists in one
database transaction, then apply the plan to the Recommender. The API answers after the commit, so an
acknowledged change survives ``kill -9``; readers see the change as soon as the API answers, in this process
and in every other one serving the store, and never take the lock. Embedding happens before the lock.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import bindparam, delete, or_

from lookalike.encoders import l2_normalise
from lookalike.live.follower import Follower
from lookalike.live.index_sync import IndexSync
from lookalike.live.lists import LiveLists, Plan
from lookalike.recommender import Recommender, UnknownProductError
from lookalike.settings import Settings
from lookalike.store import changes, journal
from lookalike.store.sql import ProductRow
from lookalike.store.tables import Product, SimilarProduct

log = logging.getLogger(__name__)


_updater_lock = threading.Lock()


def updater_for(rec: Recommender, settings: Settings) -> Updater:
    """The one Updater of a Recommender, made on first use (a write, a resumed index sync, or following)."""
    with _updater_lock:
        up: Updater | None = getattr(rec, "live_updater", None)
        if up is None:
            up = Updater(rec, sync_delay=settings.index_sync_seconds)
            rec.live_updater = up  # type: ignore[attr-defined]
        return up


def close_updater(rec: Recommender) -> None:
    """Stop the Recommender's Updater, if it has one (its last index checkpoint runs now)."""
    up: Updater | None = getattr(rec, "live_updater", None)
    if up is not None:
        up.close()
        with _updater_lock:
            if getattr(rec, "live_updater", None) is up:
                del rec.live_updater


class ProductExistsError(ValueError):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id!r} already exists")
        self.product_id = product_id


@dataclass
class Change:
    """What one write did: for the API response and the update report."""

    op: str  # "added", "image_changed", "attributes_changed", "deleted", "unchanged"
    product_id: str
    lists_changed: int = 0


class Updater:
    def __init__(self, rec: Recommender, sync_delay: float = 10.0, index_sync: bool = True) -> None:
        self.rec = rec
        self.lock = threading.RLock()
        self.lists = LiveLists(rec)
        self.follower = Follower(self, applied=rec.change_seq)
        self.sync: IndexSync | None = (
            IndexSync(rec.workspace.root, rec.store, rec.encoder_name, delay=sync_delay) if index_sync else None)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """The writer lock of this process and of every process on the store, on the latest state."""
        with self.lock, changes.process_lock(self.rec.store):
            self.follower.catch_up()
            yield

    def close(self, checkpoint: bool = True) -> None:
        self.follower.close()
        if self.sync is not None:
            self.sync.close()
            if checkpoint:
                self.sync.checkpoint()

    # ---- embedding (no lock: CPU work) --------------------------------------------------------------
    def embed(self, images: Sequence[Image.Image | Path]) -> np.ndarray:
        vecs = self.rec.encoder.encode(list(images), show_progress=False, num_workers=0)
        if len(vecs) != len(images):
            raise ValueError("the encoder could not embed every image")
        return l2_normalise(np.asarray(vecs, np.float32))

    # ---- writes -----------------------------------------------------------------------------------
    def add(self, product: ProductRow, vector: np.ndarray) -> Change:
        """A new product (or a deleted id coming back): its own list, and every list it now belongs in."""
        with self._writing():
            if product.id in self.rec.products:
                raise ProductExistsError(product.id)
            return self._add(product, vector)

    def _add(self, product: ProductRow, vector: np.ndarray) -> Change:
        ll = self.lists
        x = self._check_vector(vector)
        row = ll.n
        plan = ll.plan_attach(row, x, ll.group_code(product.image_hash), ll.category_code(product.category), Plan())
        self._commit(plan, upsert=product, journal_add=(product, x), new_row=(row, product.id))
        ll.apply_new(product, x, plan)
        return self._done(Change("added", product.id, len(plan.lists)))

    def upsert(self, product: ProductRow, vector: np.ndarray | None) -> Change:
        """Add, or bring an existing product in line with ``product``: re-embedded only when ``vector`` is
        given and the image hash changed (the caller decides whether to embed)."""
        with self._writing():
            old = self.rec.products.get(product.id)
            if old is None or product.id not in self.rec.pos:
                if vector is None:
                    raise ValueError(f"product {product.id!r} is new (or has no vector yet): give its vector")
                if old is not None:  # stored but never embedded (its image failed before)
                    self.rec.products.pop(product.id, None)
                return self._add(product, vector)
            if vector is not None and product.image_hash != old.image_hash:
                return self._replace_vector(product, vector)
            return self._set_fields(product)

    def _replace_vector(self, product: ProductRow, vector: np.ndarray) -> Change:
        ll = self.lists
        x = self._check_vector(vector)
        row = self.rec.pos[product.id]
        plan = ll.plan_detach(row, Plan())
        plan = ll.plan_attach(row, x, ll.group_code(product.image_hash), ll.category_code(product.category), plan)
        self._commit(plan, upsert=product, journal_add=(product, x))
        ll.apply_vector(row, product, x, plan)
        return self._done(Change("image_changed", product.id, len(plan.lists)))

    def update(self, product_id: str, title: str | None = None, category: str | None = None,
               attributes: dict[str, Any] | None = None, replace_attributes: bool = False) -> ProductRow:
        """Change title, category and attributes (a None attribute value removes it); no re-embedding."""
        with self._writing():
            old = self.rec.products.get(product_id)
            if old is None:
                raise UnknownProductError(product_id)
            attrs = {} if replace_attributes else dict(old.attributes)
            for k, v in (attributes or {}).items():
                if v is None:
                    attrs.pop(k, None)
                else:
                    attrs[k] = v
            new = replace(old, title=old.title if title is None else title,
                          category=old.category if category is None else category, attributes=attrs)
            self._set_fields(new)
            return new

    def _set_fields(self, product: ProductRow) -> Change:
        ll, rec = self.lists, self.rec
        old = rec.products[product.id]
        row = rec.pos.get(product.id)
        plan = Plan()
        if row is not None and ll.same_category and product.category != old.category:
            # lists are per category in this workspace: the product moves to the other category's lists
            plan = ll.plan_detach(row, plan)
            plan = ll.plan_attach(row, ll._vec[row], int(ll._groups[row]), ll.category_code(product.category), plan)
        if product == old:
            return Change("unchanged", product.id)
        self._commit(plan, upsert=product)
        if row is None:
            rec.products[product.id] = product
        else:
            ll.apply_attributes(row, product, plan)
        return self._done(Change("attributes_changed", product.id, len(plan.lists)))

    def delete(self, product_id: str) -> Change:
        with self._writing():
            rec, ll = self.rec, self.lists
            if product_id not in rec.products:
                raise UnknownProductError(product_id)
            row = rec.pos.get(product_id)
            plan = ll.plan_detach(row, Plan()) if row is not None else Plan()
            self._commit(plan, delete_id=product_id)
            if row is not None:
                ll.apply_delete(row, product_id, plan)
            else:
                rec.products.pop(product_id, None)
            return self._done(Change("deleted", product_id, len(plan.lists)))

    # ---- internals --------------------------------------------------------------------------------
    def _check_vector(self, vector: np.ndarray) -> np.ndarray:
        x = np.asarray(vector, np.float32).reshape(-1)
        if x.shape[0] != self.lists._vec.shape[1]:
            raise ValueError(f"vector has dim {x.shape[0]}, the workspace's encoder makes {self.lists._vec.shape[1]}")
        return l2_normalise(x[None, :])[0]

    def _done(self, change: Change) -> Change:
        if self.sync is not None:
            self.sync.kick()
        return change

    def _commit(self, plan: Plan, upsert: ProductRow | None = None, delete_id: str | None = None,
                journal_add: tuple[ProductRow, np.ndarray] | None = None,
                new_row: tuple[int, str] | None = None) -> None:
        """One transaction: the product row, the journal entry and every list the plan replaces."""
        rec, enc = self.rec, self.rec.encoder_name

        def pid(row: int) -> str:
            return new_row[1] if new_row is not None and row == new_row[0] else rec.ids[row]

        ll, t = self.lists, SimilarProduct.__table__
        cuts: list[dict[str, object]] = []
        rows: list[dict[str, object]] = []
        for r, (idx, sc) in plan.lists.items():
            # only the ranks from the first change on are rewritten: entering a list at rank 15 touches 5 rows
            old_idx = ll._idx[r] if r < ll.n else np.full(ll.k, -1, np.int64)
            old_sc = ll._sc[r] if r < ll.n else np.full(ll.k, -np.inf, np.float32)
            diff = np.flatnonzero((old_idx != idx) | ((old_sc != sc) & (idx >= 0)))
            if not len(diff):
                continue
            first = int(diff[0])
            cuts.append({"e": enc, "p": pid(r), "f": first})
            pct = rec.scale.pct(np.where(np.isfinite(sc), sc, -1.0))
            rows += [{"encoder": enc, "product_id": pid(r), "rank": rank, "similar_id": pid(int(j)),
                      "score": float(sc[rank]), "similarity_pct": float(pct[rank])}
                     for rank, j in enumerate(idx.tolist()) if j >= 0 and rank >= first]
        cut = t.delete().where(t.c.encoder == bindparam("e"), t.c.product_id == bindparam("p"),
                               t.c.rank >= bindparam("f"))
        with rec.store.session() as s, s.begin():
            if upsert is not None:
                p = s.get(Product, upsert.id)
                if p is None:
                    s.add(Product(id=upsert.id, title=upsert.title, category=upsert.category, image=upsert.image,
                                  image_hash=upsert.image_hash, attributes=upsert.attributes, deleted=False))
                else:
                    p.title, p.category, p.image = upsert.title, upsert.category, upsert.image
                    p.image_hash, p.attributes, p.deleted = upsert.image_hash, dict(upsert.attributes), False
            if delete_id is not None:
                p = s.get(Product, delete_id)
                if p is not None:
                    p.deleted = True
                s.execute(delete(SimilarProduct).where(
                    SimilarProduct.encoder == enc,
                    or_(SimilarProduct.product_id == delete_id, SimilarProduct.similar_id == delete_id)))
                journal.record(s, enc, "remove", delete_id)
            if journal_add is not None:
                journal.record(s, enc, "add", journal_add[0].id, journal_add[0].image_hash, journal_add[1])
            feed = changes.record(
                s, enc, "deleted" if delete_id is not None else "vector" if journal_add is not None else "fields",
                delete_id or (upsert.id if upsert is not None else ""), upsert,
                journal_add[1] if journal_add is not None else None, [pid(r) for r in plan.lists])
            conn = s.connection()  # Core executemany: the ORM's bulk paths cost more than SQLite itself here
            if cuts:
                conn.execute(cut, cuts)
            if rows:
                conn.execute(t.insert(), rows)
            s.flush()
            seq = feed.seq
        self.follower.applied = seq  # this write's own entry: every earlier one was replayed under the lock
