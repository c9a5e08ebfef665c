"""The hot request without the framework: plain similar-by-id answered in a pure ASGI layer.

A product page asks ``GET /api/products/{id}/similar`` on every view. Through FastAPI, most of that
request's time went to routing, parameter solving and the exception and exit-stack wrappers, not to the
lookup (py-spy on a served 44k catalogue: the route function was a third of the request). This layer sits
just inside the metrics, API-key and CORS middlewares, so those still apply, and answers only the plain
form of the request itself: no parameter but a valid ``k`` and ``rerank``, a loaded and up-to-date
Recommender, a known product, a precomputed list long enough. It sends the same bytes and headers the
route would. Everything else, every error included, falls through to the route, so the API's behaviour
and messages live in one place; ``tests/service/test_fastpath.py`` checks both paths answer alike.
"""
from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from lookalike.recommender import UnknownProductError
from lookalike.service.deps import ServiceState

log = logging.getLogger(__name__)

PREFIX, SUFFIX = "/api/products/", "/similar"


class RouteLabel:
    """What the metrics middleware reads from ``scope["route"]``: the template, never the raw path."""

    path_format = PREFIX + "{product_id}" + SUFFIX


class SimilarFastPath:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app, self.state = app, state
        self.route = RouteLabel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(PREFIX) and path.endswith(SUFFIX) and len(path) > len(PREFIX) + len(SUFFIX):
                body = self.answer(path[len(PREFIX):-len(SUFFIX)], scope["query_string"])
                if body is not None:
                    scope["route"] = self.route
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-length", str(len(body)).encode()),
                                            (b"content-type", b"application/json")]})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def answer(self, product_id: str, query: bytes) -> bytes | None:
        """The response body, or None to let the route handle the request."""
        state = self.state
        rec = state.recommender
        if rec is None:
            return None
        k, rerank = state.settings.default_k, "ctr"
        if query:
            # the route's reading of the query string (Starlette's QueryParams: the last value wins); without
            # escapes, a plain split reads it the same and costs a tenth of parse_qsl
            text = query.decode("latin-1")
            pairs = (parse_qsl(text, keep_blank_values=True) if "%" in text or "+" in text
                     else [p.partition("=")[::2] for p in text.split("&") if p])
            for key, value in pairs:
                if key == "k" and value.isascii() and value.isdigit():
                    k = int(value)
                elif key == "rerank" and value in ("ctr", "none"):
                    rerank = value
                else:
                    return None
        if not 1 <= k <= min(state.settings.max_k, rec.build_info.get("k", 0)):
            return None
        try:
            if state.follower is not None:
                state.follower.catch_up()
            t0 = time.perf_counter()
            recs = rec.similar(product_id, k=k, rerank=rerank)
            state.metrics.observe_stage("similar", time.perf_counter() - t0)
        except UnknownProductError:
            return None
        except Exception:  # the route retries and turns it into the right 503 or a logged 500
            log.debug("fast path declined %s", product_id, exc_info=True)
            return None
        return state.json_cache.items(recs)
