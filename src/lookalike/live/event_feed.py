"""Click statistics shared by every process that serves one store (``--workers N``, replicas).

Each process counts the events it accepts at once (service/routes/events.py). The follower's background
poll (live/follower.py) then folds in the events other processes stored, read back from the ``events``
table by id. A process starts from the counts up to the highest id it saw at start-up (its floor), so no
event is counted twice or missed across a restart.

Why a window: on PostgreSQL an id is taken at insert, so two concurrent transactions can commit out of id
order, and a poll may see id 12 before id 11 is committed. Each read therefore reaches back ``WINDOW`` ids
below the highest one seen and skips the ids already counted (this process's own among them). A late event
further back than that, or one committed while no newer event arrives, waits for the next newer event.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookalike.recommend.rerank import ClickStats
    from lookalike.store.sql import Store

log = logging.getLogger(__name__)

WINDOW = 1000


class EventFeed:
    def __init__(self, stats: ClickStats, store: Store, floor: int) -> None:
        self.stats, self.store = stats, store
        self.floor = self.high = floor  # events up to ``floor`` came in with the start-up counts
        self.seen: set[int] = set()  # counted ids above the window's bottom
        self.following = False  # set by the follower: until then nobody reads back, so own ids are not kept
        self._lock = threading.Lock()

    def own(self, ids: Iterable[int]) -> None:
        """Ids this process stored and counts itself; call before committing them, so no poll reads them first."""
        if self.following:
            with self._lock:
                self.seen.update(ids)

    def catch_up(self) -> int:
        """Fold in the events other processes stored since the last call; returns how many."""
        if self.store.max_event_id() <= self.high:
            return 0
        rows = self.store.events_after(max(self.floor, self.high - WINDOW))
        n = 0
        with self._lock:
            for id_, type_, product_id, source, position in rows:
                if id_ in self.seen:
                    continue
                self.seen.add(id_)
                self.stats.add(type_, product_id, source, position)
                n += 1
            if rows:
                self.high = max(self.high, rows[-1][0])
            bottom = max(self.floor, self.high - WINDOW)
            self.seen = {i for i in self.seen if i > bottom}
        if n:
            log.debug("events: folded in %d from other processes (up to id %d)", n, self.high)
        return n
