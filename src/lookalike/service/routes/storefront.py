"""The storefront: server-rendered pages over the same Recommender as the API.

Every page works without JavaScript (plain links and forms); ``static/app.js`` only adds auto-submit,
drag-and-drop and carousel buttons.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.templating import Jinja2Templates
from PIL import Image
from starlette.responses import HTMLResponse, Response

from lookalike.recommender import Recommender
from lookalike.service.deps import ServiceState
from lookalike.service.routes.search import photo_query_from_form, read_form, run_photo_search
from lookalike.service.schemas import product_dict

router = APIRouter(include_in_schema=False)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
PAGE_SIZE = 24
SIMILAR_ON_PAGE = 12
GOES_WITH_CATEGORIES = 3
GOES_WITH_ON_PAGE = 4


def _label(name: str) -> str:
    """``baseColour`` -> ``Base colour``, ``article_type`` -> ``Article type``."""
    out = "".join(f" {c.lower()}" if c.isupper() and i else c for i, c in enumerate(name.replace("_", " ")))
    return out[:1].upper() + out[1:]


templates = Jinja2Templates(directory=str(TEMPLATES))
templates.env.filters["label"] = _label


class PageError(Exception):
    """Rendered as an HTML error page (the API's errors stay JSON)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def _state(request: Request) -> ServiceState:
    return request.app.state.lookalike


def _recommender(request: Request) -> Recommender:
    state = _state(request)
    if state.recommender is None:
        if state.load_error:
            raise PageError(503, "Unavailable", f"The shop could not load its catalogue: {state.load_error}")
        raise PageError(503, "Loading", "The shop is loading its catalogue. Refresh this page in a moment.")
    return state.recommender


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    state = _state(request)
    rec = state.recommender
    base = {"product_count": state.facets().products if rec else 0, "encoder_name": rec.encoder_name if rec else "-"}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)


def error_page(request: Request, exc: PageError) -> Response:
    return render(request, "error.html", {"title": exc.title, "message": exc.message}, status=exc.status)


@router.get("/", response_class=HTMLResponse)
def catalogue(request: Request, page: str | None = None, category: str | None = None,
              q: str | None = None) -> Response:
    _recommender(request)
    state = _state(request)
    facets = state.facets()
    attrs = {k: v for k, v in request.query_params.items() if k in facets.attributes and v}
    # a page is a link a shopper may have edited: anything odd shows the first or the last page, not an error
    n = int(page) if page and page.isdigit() else 1
    first = max(1, min(n, 1_000_000))
    rows, total = state.list_products(limit=PAGE_SIZE, offset=(first - 1) * PAGE_SIZE, category=category or None,
                                      q=(q or "").strip() or None, attrs=attrs or None)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page_no = min(first, pages)
    if page_no != first:
        rows, total = state.list_products(limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE,
                                          category=category or None, q=(q or "").strip() or None,
                                          attrs=attrs or None)
    keep = {k: v for k, v in {"q": q, "category": category, **attrs}.items() if v}

    def page_url(n: int) -> str:
        return "/?" + urlencode({**keep, "page": n})

    return render(request, "catalogue.html", {
        "nav": "catalogue", "products": [product_dict(r) for r in rows], "total": total, "page": page_no,
        "pages": pages, "page_url": page_url, "q": q, "category": category, "attrs": attrs,
        "categories": facets.categories, "facets": facets.attributes,
    })


@router.get("/product/{product_id:path}", response_class=HTMLResponse)
def product_page(request: Request, product_id: str) -> Response:
    rec = _recommender(request)
    row = rec.product(product_id)
    if row is None:
        raise PageError(404, "Product not found", f"There is no product with id {product_id!r}.")
    similar = rec.similar(product_id, k=SIMILAR_ON_PAGE)
    items = [{"product": product_dict(r.product), "similarity_pct": r.similarity_pct} for r in similar]
    return render(request, "product.html", {"nav": "product", "product": product_dict(row), "similar": items,
                                            "goes_with": _goes_with_sections(rec, product_id)})


def _goes_with_sections(rec: Recommender, product_id: str) -> list[dict[str, Any]]:
    """A few other categories with their best matches; none (the section is left out) when there are none."""
    model = rec.goes_with_model()
    out = []
    for cat in model.suggested_categories(product_id, GOES_WITH_CATEGORIES):
        hits = rec.goes_with(product_id, cat, k=GOES_WITH_ON_PAGE)
        if hits:
            out.append({"category": cat, "items": [{"product": product_dict(h.product)} for h in hits]})
    return out


def _search_context(request: Request, **extra: Any) -> dict[str, Any]:
    _recommender(request)
    state = _state(request)
    return {"nav": "search", "categories": state.facets().categories,
            "max_mb": round(state.settings.max_upload_bytes / (1024 * 1024), 1),
            "result": None, "error": None, "category": None, **extra}


def _thumbnail(image: Image.Image, size: int = 192) -> str:
    """The shopper's photo, small, inline in the results page (it is never stored on the server)."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request) -> Response:
    return render(request, "search.html", _search_context(request))


@router.post("/search", response_class=HTMLResponse)
async def search_submit(request: Request) -> Response:
    rec = _recommender(request)
    state = _state(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    category = None
    try:
        if ctype != "multipart/form-data":
            raise HTTPException(415, "send the form as multipart/form-data with a file field 'image'")
        form = await read_form(request, state.settings)
        try:
            category = form.get("category") if isinstance(form.get("category"), str) else None
            q = await photo_query_from_form(form, state)
        finally:
            await form.close()
        result = await run_photo_search(rec, state, q)
    except HTTPException as e:
        ctx = await run_in_threadpool(_search_context, request, error=e.detail, category=category)
        return render(request, "search.html", ctx, status=e.status_code)
    pred = result.predicted_category
    thumbnail = await run_in_threadpool(_thumbnail, q.image)
    items = [{"product": product_dict(r.product), "similarity_pct": r.similarity_pct} for r in result.items]
    ctx = await run_in_threadpool(_search_context, request, category=category, result=items,
                                  predicted={"label": pred[0], "confidence": pred[1]} if pred else None,
                                  searched=getattr(result, "searched_categories", None), thumbnail=thumbnail)
    return render(request, "search.html", ctx)
