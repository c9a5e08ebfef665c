"""``/api/products``: list and look up products, and their similar products.

The similar route is the hot path of the service (a product page asks it on every view): it does no I/O,
the Recommender answers from in-memory arrays, and the response is serialised straight to bytes.
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from lookalike.recommend.filters import FilterSpec
from lookalike.recommender import UnknownProductError
from lookalike.service.deps import RecommenderDep, ServiceState, StateDep, check_k, get_recommender
from lookalike.service.schemas import ErrorBody, Item, ItemList, Product, ProductList, dumps

router = APIRouter(prefix="/api/products", tags=["products"])

RESERVED = {"limit", "offset", "category", "q"}
MAX_LIMIT = 200


class JSONBytes(Response):
    """JSON from plain dicts or already-encoded bytes, without FastAPI's per-field validation pass."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)


def parse_filters(filters: list[str], excludes: list[str], max_per: list[str]) -> FilterSpec | None:
    if not (filters or excludes or max_per):
        return None
    try:
        return FilterSpec.parse(filters=filters, excludes=excludes, max_per=max_per)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


def attribute_filters(request: Request, state: ServiceState) -> dict[str, str]:
    """Every query parameter other than limit/offset/category/q is an attribute filter."""
    attrs = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    if attrs:
        known = state.facets().attribute_keys
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise HTTPException(422, f"unknown attribute filter {unknown[0]!r}: filter with "
                                     f"limit, offset, category, q or one of the attributes {sorted(known)}")
    return attrs


_ERRORS = {404: {"model": ErrorBody, "description": "no product with this id"},
           422: {"model": ErrorBody, "description": "a parameter is out of range or malformed"}}


_BOOL = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def _param(name: str, what: str, doc: str, *, array: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": what}
    if array:
        schema = {"type": "array", "items": schema}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": doc}


SIMILAR_PARAMS = {"parameters": [
    _param("k", "integer", "how many (default LOOKALIKE_DEFAULT_K, at most LOOKALIKE_MAX_K)"),
    _param("same_category", "boolean", "only products of the same category (default false)"),
    _param("filter", "string", "attr:value, repeatable; values of one attr are OR-ed", array=True),
    _param("exclude", "string", "attr:value, repeatable", array=True),
    _param("max_per", "string", "attr:n: at most n results per value of attr", array=True),
    _param("rerank", "string", "ctr (default): blend in click feedback; none: the pure visual order"),
]}


@router.get("/{product_id:path}/similar", response_model=ItemList, responses=_ERRORS,
            openapi_extra=SIMILAR_PARAMS)
async def similar(product_id: str, request: Request) -> Response:
    """Products that look like this one: the precomputed list when it satisfies the query, else a live search.

    The plain form of this request (no parameter but ``k`` and ``rerank``) is answered before it gets here,
    by ``service/fastpath.py``; this route serves every other form and every error. Parameters are read
    straight from the query string, because FastAPI's declared-parameter machinery costs more than the lookup.
    """
    state: ServiceState = request.app.state.lookalike
    rec = await get_recommender(request)
    params = request.query_params
    raw_k = params.get("k")
    if raw_k is None or raw_k == "":
        k = state.settings.default_k
    else:
        try:
            k = int(raw_k)
        except ValueError:
            raise HTTPException(422, f"query parameter 'k': Input should be a valid integer (got {raw_k!r})") from None
        k = check_k(k, state.settings)
    raw_same = params.get("same_category")
    same_category = False
    if raw_same is not None:
        if raw_same.lower() not in _BOOL:
            raise HTTPException(422, "query parameter 'same_category': Input should be a valid boolean, true or "
                                     f"false (got {raw_same!r})")
        same_category = _BOOL[raw_same.lower()]
    rerank = params.get("rerank") or "ctr"
    if rerank not in ("ctr", "none"):
        raise HTTPException(422, f"query parameter 'rerank' must be 'ctr' or 'none' (got {rerank!r})")
    spec = None
    if len(params) > (raw_k is not None) + (raw_same is not None) + ("rerank" in params):
        spec = parse_filters(params.getlist("filter"), params.getlist("exclude"), params.getlist("max_per"))
    metrics = state.metrics
    try:
        if spec is None and not same_category and k <= rec.build_info.get("k", 0):
            # served from the precomputed list: microseconds of numpy, cheaper inline than a thread hop
            with metrics.time_stage("similar"):
                recs = rec.similar(product_id, k=k, rerank=rerank)
        else:
            # may fall back to a live scan of every vector: keep the event loop free meanwhile
            with metrics.time_stage("similar"):
                recs = await run_in_threadpool(rec.similar, product_id, k, spec, same_category, rerank)
    except UnknownProductError:
        raise HTTPException(404, f"no product with id {product_id!r}: list ids with GET /api/products") from None
    return JSONBytes(state.json_cache.items(recs))


@router.get("", response_model=ProductList, responses={422: _ERRORS[422]})
def list_products(
    request: Request,
    rec: RecommenderDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")] = 24,
    offset: Annotated[int, Query(ge=0)] = 0,
    category: Annotated[str | None, Query(description="exact category")] = None,
    q: Annotated[str | None, Query(description="words that must all appear in the title (or the exact id)")] = None,
) -> Response:
    """A page of products; add ``attr=value`` parameters (``gender=Women``) to filter on attributes."""
    attrs = attribute_filters(request, state)
    rows, total = state.list_products(limit=limit, offset=offset, category=category or None, q=q or None,
                                      attrs=attrs or None)
    cache = state.json_cache
    return JSONBytes(b'{"data":[' + b",".join(cache.product(r) for r in rows) + b'],"count":%d}' % total)


@router.get("/{product_id:path}", response_model=Product, responses={404: _ERRORS[404]})
async def get_product(product_id: str, rec: RecommenderDep, state: StateDep) -> Response:
    row = rec.product(product_id)
    if row is None:
        raise HTTPException(404, f"no product with id {product_id!r}: list ids with GET /api/products")
    return JSONBytes(state.json_cache.product(row))


__all__ = ["Item", "JSONBytes", "parse_filters", "router"]
