"""What routes get from the app: the one Recommender, the settings, the metrics and cached catalogue facts.

The Recommender is loaded once per process (in a background thread, so ``/health`` can answer "loading"
meanwhile) and kept in ``app.state.lookalike``; routes reach it only through these functions.
"""
from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError

from lookalike.live.follower import Follower
from lookalike.live.updater import updater_for
from lookalike.recommender import Recommender
from lookalike.service.catalogue import Facets, Listing
from lookalike.service.metrics import Metrics
from lookalike.service.schemas import JSONCache
from lookalike.settings import Settings
from lookalike.store.changes import StoreUnavailableError
from lookalike.store.sql import ProductRow

log = logging.getLogger(__name__)

@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    recommender: Recommender | None = None
    load_error: str | None = None
    json_cache: JSONCache = field(default_factory=JSONCache)
    follower: Follower | None = None  # replays other processes' writes, when follows_writes
    _listing: Listing | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def follows_writes(self) -> bool:
        return self.follower is not None

    def attach(self, rec: Recommender, freeze_gc: bool = False) -> None:
        """Index the catalogue and encode every product's JSON, then start serving ``rec``: the Recommender
        is set last, so /health says ok only once the first requests will be as fast as the rest."""
        listing = Listing(rec.store.iter_products())
        for row in map(rec.product, listing.ids):
            if row is not None:
                self.json_cache.product(row)
        with self._lock:
            self._listing = listing
        if self.settings.follows_writes(rec.store.engine.dialect.name):
            # before the Recommender is published: no request may be answered from a state that does not follow
            up = updater_for(rec, self.settings)
            up.follower.on_change = lambda _n: self.drop_listing()
            up.follower.start()
            self.follower = up.follower
        if freeze_gc:
            # Everything loaded so far lives as long as the process. Freezing it keeps the cyclic GC from
            # walking those objects on every full collection: at 44k products one took ~150 ms, which was
            # the whole p99 of similar-by-id.
            gc.collect()
            gc.freeze()
        self.recommender = rec

    def drop_listing(self) -> None:
        """The catalogue listing and its facets are rebuilt from the store on next use (after a write)."""
        self._listing = None

    def listing(self) -> Listing:
        """The in-memory catalogue listing, built once from the store (the same snapshot the Recommender has)."""
        if self._listing is None:
            with self._lock:
                if self._listing is None and self.recommender is not None:
                    self._listing = Listing(self.recommender.store.iter_products())
        if self._listing is None:
            raise HTTPException(503, "the service is still loading its workspace; retry when GET /health says ok")
        return self._listing

    def facets(self) -> Facets:
        return self.listing().facets

    def list_products(self, limit: int = 24, offset: int = 0, category: str | None = None, q: str | None = None,
                      attrs: dict[str, str] | None = None) -> tuple[list[ProductRow], int]:
        ids, total = self.listing().query(limit, offset, category, q, attrs)
        rec = self.recommender
        assert rec is not None
        # the Recommender's own row objects, so the JSON cache recognises them
        rows = [row for row in map(rec.product, ids) if row is not None]
        return rows, total


# async on purpose: FastAPI runs plain-def dependencies in the thread pool, a thread hop per request for a
# dictionary lookup
async def get_state(request: Request) -> ServiceState:
    return request.app.state.lookalike


async def get_settings(request: Request) -> Settings:
    return request.app.state.lookalike.settings


async def get_recommender(request: Request) -> Recommender:
    state: ServiceState = request.app.state.lookalike
    if state.recommender is None:
        if state.load_error:
            raise HTTPException(503, f"the service could not load its workspace: {state.load_error}")
        raise HTTPException(503, "the service is still loading its workspace; retry when GET /health says ok",
                            headers={"Retry-After": "2"})
    if state.follower is not None:
        # a write another process acknowledged must be served here at once: one indexed max(seq) when none
        try:
            state.follower.catch_up()
        except (StoreUnavailableError, SQLAlchemyError) as e:
            log.warning("change feed unreachable: %s", e)
            raise HTTPException(503, "the store is unreachable, so this replica cannot tell whether it is up "
                                     "to date; retry shortly", headers={"Retry-After": "2"}) from e
    return state.recommender


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
StateDep = Annotated[ServiceState, Depends(get_state)]


def check_k(k: int | None, settings: Settings) -> int:
    if k is None:
        return settings.default_k
    if not 1 <= k <= settings.max_k:
        raise HTTPException(422, f"k must be between 1 and {settings.max_k} (got {k}); "
                                 "the cap is set by LOOKALIKE_MAX_K")
    return k


def health_body(state: ServiceState) -> tuple[int, dict[str, Any]]:
    rec = state.recommender
    if rec is not None:
        return 200, {"status": "ok", "products": rec.store.count(), "encoder": rec.encoder_name}
    if state.load_error:
        return 503, {"status": "error", "products": None, "encoder": None, "detail": state.load_error}
    return 503, {"status": "loading", "products": None, "encoder": None}
