"""Keep this process's Recommender in step with writes other processes made to the same store.

Every write commits an entry to the change feed (store/changes.py). ``Follower.catch_up`` replays the entries
this process has not applied yet: it is called before each request is answered (one indexed ``max(seq)``
query on a raw connection when nothing changed: ~10 µs on SQLite), by a background poll, and by the local Updater under the cross-process writer
lock before it plans a write, so every plan starts from the state every earlier write left.

Replay, for the entries of one catch-up, in ``seq`` order:
1. ``vector``: a new product gets the next row, a known one its new vector; ``fields``: the new title,
   category and attributes; ``deleted``: the product leaves.
2. then the similar lists those writes replaced are read back from ``similar_products`` (the writer computed
   them exactly, see live/lists.py), once per list however many entries named it. A list entry naming a
   product this process does not know yet (written after the feed was read) is left out until the next
   catch-up, which re-reads that list because the newer entry names it too.

The background poll also folds other processes' click events into the re-ranking statistics
(live/event_feed.py); those are not consistency-critical, so requests do not wait for them.

Replaying an entry whose effect is already in memory (written before this process loaded the store, but
after it read the feed position) changes nothing, so start-up reads the position first, then the store.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from lookalike.live.lists import Plan
from lookalike.store import changes

if TYPE_CHECKING:
    from lookalike.live.updater import Updater

log = logging.getLogger(__name__)


class Follower:
    def __init__(self, updater: Updater, applied: int, poll_seconds: float = 1.0,
                 retention_hours: float = 24.0) -> None:
        self.up = updater
        self.rec = updater.rec
        self.applied = applied  # last feed seq whose effect this process holds
        self.poll_seconds, self.retention_hours = poll_seconds, retention_hours
        self.on_change: Callable[[int], None] | None = None  # the service drops its listing cache here
        self.replayed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self.probe = changes.FeedProbe(updater.rec.store, updater.rec.encoder_name)
        self.events = updater.rec.event_feed  # click statistics: other processes' events, on the poll only
        if self.events is not None:
            self.events.following = True

    # ---- the background poll ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None and self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="lookalike-follower", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.probe.close()

    def _loop(self) -> None:
        # the poll keeps an idle process within seconds of the feed, far inside the retention
        while not self._stop.wait(self.poll_seconds):
            try:
                self.catch_up()
                if self.events is not None:
                    self.events.catch_up()
                if time.monotonic() - self._last_prune > 3600:
                    self._last_prune = time.monotonic()
                    pruned = changes.prune(self.rec.store, self.retention_hours)
                    if pruned:
                        log.info("change feed: pruned %d entries older than %gh", pruned, self.retention_hours)
            except Exception:  # a store outage: requests report it; the poll retries
                log.exception("change feed poll failed; retrying")

    # ---- replay -----------------------------------------------------------------------------------
    def catch_up(self) -> int:
        """Apply every feed entry after ``applied``; returns how many."""
        rec = self.rec
        if self.probe.last_seq() <= self.applied:
            return 0
        with self.up.lock:
            todo = changes.since(rec.store, rec.encoder_name, self.applied)
            if not todo:
                return 0
            owners: set[str] = set()
            for ch in todo:
                self._apply(ch)
                owners.update(ch.lists)
            self._reload_lists(owners)
            self.applied = todo[-1].seq
            self.replayed += len(todo)
        log.info("change feed: replayed %d write(s) from other processes, now at %d", len(todo), self.applied)
        if self.on_change is not None:
            self.on_change(len(todo))
        return len(todo)

    def _apply(self, ch: changes.Change) -> None:
        rec, ll = self.rec, self.up.lists
        row = rec.pos.get(ch.product_id)
        if ch.op == "deleted":
            if row is not None:
                ll.apply_delete(row, ch.product_id, Plan())
            else:
                rec.products.pop(ch.product_id, None)
            return
        product = ch.product
        assert product is not None, f"change {ch.seq} ({ch.op}) carries no product"
        if ch.op == "vector" and ch.vector is not None:
            x = ch.vector.astype(np.float32)
            if row is None:
                rec.products.pop(product.id, None)  # stored without a vector before (its image had failed)
                ll.apply_new(product, x, Plan())
            else:
                ll.apply_vector(row, product, x, Plan())
        elif row is not None:
            ll.apply_attributes(row, product)
        else:
            rec.products[product.id] = product

    def _reload_lists(self, owners: set[str]) -> None:
        """Read back the lists the writers replaced, for the owners this process still holds."""
        rec, ll = self.rec, self.up.lists
        live = [pid for pid in owners if pid in rec.pos]
        if not live:
            return
        k = ll.k
        rows: dict[str, list[tuple[int, str, float]]] = {pid: [] for pid in live}
        for pid, rank, sid, score in rec.store.similar_table(rec.encoder_name, live):
            rows[pid].append((rank, sid, score))
        plan = Plan()
        for pid, entries in rows.items():
            idx = np.full(k, -1, np.int64)
            sc = np.full(k, -np.inf, np.float32)
            known = [(rec.pos[sid], score) for _, sid, score in sorted(entries) if sid in rec.pos]
            for r, (j, s) in enumerate(known[:k]):
                idx[r], sc[r] = j, s
            plan.lists[rec.pos[pid]] = (idx, sc)
        ll.apply_lists(plan)
