"""What routes get from the app: the one Recommender, the settings, the metrics and cached catalogue facts.

The Recommender is loaded once per process (in a background thread, so ``/health`` can answer "loading"
meanwhile) and kept in ``app.state.lookalike``; routes reach it only through these functions.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from lookalike.recommender import Recommender
from lookalike.service.metrics import Metrics
from lookalike.service.schemas import JSONCache
from lookalike.settings import Settings

log = logging.getLogger(__name__)

# An attribute is offered as a storefront filter when it has at most this many distinct values.
MAX_FACET_VALUES = 60


@dataclass
class Facets:
    """Catalogue-wide facts the storefront and the validators need, computed once per process."""

    products: int
    categories: list[tuple[str, int]]
    attributes: dict[str, list[tuple[str, int]]]  # filterable attribute -> [(value, count)] by count
    attribute_keys: set[str]  # every attribute key seen, filterable or not


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    recommender: Recommender | None = None
    load_error: str | None = None
    json_cache: JSONCache = field(default_factory=JSONCache)
    _facets: Facets | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def facets(self) -> Facets:
        if self._facets is None:
            with self._lock:
                if self._facets is None and self.recommender is not None:
                    self._facets = compute_facets(self.recommender)
        assert self._facets is not None
        return self._facets


def compute_facets(rec: Recommender) -> Facets:
    values: dict[str, Counter[str]] = {}
    n = 0
    for row in rec.store.iter_products():
        n += 1
        for k, v in (row.attributes or {}).items():
            if v is None or isinstance(v, (dict, list)):
                continue
            c = values.setdefault(k, Counter())
            if len(c) <= MAX_FACET_VALUES:  # stop counting values of free-text attributes early
                c[str(v)] += 1
    attributes = {k: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
                  for k, c in sorted(values.items()) if 1 < len(c) <= MAX_FACET_VALUES}
    return Facets(products=n, categories=rec.store.categories(), attributes=attributes, attribute_keys=set(values))


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
