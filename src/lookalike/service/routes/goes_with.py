"""``GET /api/products/{id}/goes-with?category=<target>&k=``: cross-category recommendations.

The same item shape as ``/similar``; ``score`` is the recipe's score and ``similarity_pct`` the share of the
target category this item outranks for this product. Included before the products router, whose
``/{product_id:path}`` route would otherwise swallow this path.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from lookalike.recommend.goes_with import UnknownCategoryError
from lookalike.recommender import UnknownProductError
from lookalike.service.deps import ServiceState, check_k, get_recommender
from lookalike.service.routes.products import JSONBytes
from lookalike.service.schemas import ErrorBody, ItemList

router = APIRouter(prefix="/api/products", tags=["products"])

_ERRORS = {404: {"model": ErrorBody, "description": "no product with this id"},
           422: {"model": ErrorBody, "description": "missing or unknown target category, k out of range, "
                                                     "or a recipe that is not fitted"}}


@router.get("/{product_id:path}/goes-with", response_model=ItemList, responses=_ERRORS)
async def goes_with(
    product_id: str,
    request: Request,
    category: Annotated[str | None, Query(description="the target category, e.g. 'dining table'")] = None,
    k: Annotated[int | None, Query(description="how many (default LOOKALIKE_DEFAULT_K)")] = None,
    recipe: Annotated[str | None, Query(description="style, colour, combined, or the fitted one (default)")] = None,
) -> Response:
    """Products of another category that go with this one (the table for this chair)."""
    state: ServiceState = request.app.state.lookalike
    rec = await get_recommender(request)
    k = check_k(k, state.settings)
    if rec.product(product_id) is None:
        raise HTTPException(404, f"no product with id {product_id!r}: list ids with GET /api/products")
    try:
        # the first call loads (or builds) the goes-with model: keep the event loop free meanwhile
        model = await run_in_threadpool(rec.goes_with_model)
        if not category:
            raise HTTPException(422, "query parameter 'category' is required: the target category, one of "
                                     + ", ".join(repr(c) for c in model.categories))
        recs = await run_in_threadpool(rec.goes_with, product_id, category, k, recipe)
    except UnknownProductError:
        raise HTTPException(404, f"no product with id {product_id!r}: list ids with GET /api/products") from None
    except UnknownCategoryError as e:
        raise HTTPException(422, f"query parameter 'category': unknown category {e.category!r}; valid "
                                 "categories: " + ", ".join(repr(c) for c in e.valid)) from None
    except ValueError as e:  # an unknown or unfitted recipe
        raise HTTPException(422, f"query parameter 'recipe': {e}") from None
    return JSONBytes(state.json_cache.items(recs))
