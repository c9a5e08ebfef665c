"""``POST /api/search``: find products by photo (multipart upload or an image URL) or by example ids.

The body is parsed here rather than by FastAPI's Form/File parameters so that its size is enforced while
it is read: a client that lies in Content-Length (or sends none) still cannot push more than the cap
into memory or onto disk.

Status codes, exactly:
  413  the body, the image or the fetched image_url is over LOOKALIKE_MAX_UPLOAD_BYTES, or the image is
       over LOOKALIKE_MAX_IMAGE_PIXELS
  415  the request is neither multipart/form-data nor JSON, or the uploaded file is not an image at all
       (no known image format: a text file, a PDF...)
  422  the image is in an image format but cannot be decoded (truncated, corrupt); a field is missing or
       malformed; image_url is disabled, not http(s), or cannot be fetched
  404  a product id in positive/negative does not exist
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from lookalike.imaging import ImageTooLargeError, load_image
from lookalike.recommend.filters import FilterSpec
from lookalike.recommender import Recommender, SearchResult, UnknownProductError
from lookalike.service.deps import RecommenderDep, ServiceState, StateDep, check_k
from lookalike.service.routes.products import JSONBytes, parse_filters
from lookalike.service.schemas import SEARCH_REQUEST_BODY, ErrorBody, SearchJSON, SearchResponse
from lookalike.settings import Settings

router = APIRouter(tags=["search"])

MAX_JSON_BYTES = 64 * 1024
FORM_OVERHEAD = 64 * 1024  # room for the multipart boundaries and the small text fields
FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"


class BodyTooLarge(Exception):
    pass


def too_large(what: str, cap: int) -> HTTPException:
    return HTTPException(413, f"{what} is over the cap of {cap} bytes: send a smaller image "
                              "(the cap is set by LOOKALIKE_MAX_UPLOAD_BYTES)")


async def capped_stream(request: Request, cap: int) -> AsyncGenerator[bytes, None]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > cap:
            raise BodyTooLarge()
        yield chunk


SEARCH_FORM_HINT = "Send one file field 'image' and optional k, category, route, filter, exclude, max_per fields"


async def read_form(request: Request, settings: Settings, overhead: int = FORM_OVERHEAD, max_fields: int = 64,
                    hint: str = SEARCH_FORM_HINT) -> FormData:
    """A multipart body of at most one file, capped at the upload limit plus ``overhead`` for the fields."""
    cap = settings.max_upload_bytes + overhead
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:  # refuse before reading anything
        raise too_large("the request body", cap)
    parser = MultiPartParser(request.headers, capped_stream(request, cap), max_files=1, max_fields=max_fields)
    try:
        return await parser.parse()
    except BodyTooLarge:
        raise too_large("the request body", cap) from None
    except MultiPartException as e:
        raise HTTPException(422, f"malformed multipart body: {e}. {hint}") from e


async def read_json(request: Request) -> SearchJSON:
    json_too_large = HTTPException(413, f"the JSON body is over {MAX_JSON_BYTES} bytes: upload large inputs "
                                        "as multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise json_too_large
    body = bytearray()
    try:
        async for chunk in capped_stream(request, MAX_JSON_BYTES):
            body += chunk
    except BodyTooLarge:
        raise json_too_large from None
    try:
        raw = json.loads(body)
    except ValueError as e:
        raise HTTPException(422, f"the body is not valid JSON: {e}") from e
    try:
        return SearchJSON.model_validate(raw)
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
        raise HTTPException(422, f"bad JSON body: {errs}. Send {{\"image_url\": ...}} or "
                                 f"{{\"positive\": [ids], \"negative\": [ids]}} with optional k, filter, "
                                 "exclude, max_per") from e


def decode_image(data: bytes, settings: Settings) -> Image.Image:
    if len(data) > settings.max_upload_bytes:
        raise too_large(f"the image ({len(data)} bytes)", settings.max_upload_bytes)
    if not data:
        raise HTTPException(422, "the 'image' upload is empty: attach a photo file")
    try:
        return load_image(data, max_pixels=settings.max_image_pixels)
    except ImageTooLargeError as e:
        raise HTTPException(413, f"{e}: send a smaller image (the cap is set by LOOKALIKE_MAX_IMAGE_PIXELS)") from e
    except ValueError as e:
        if isinstance(e.__cause__, UnidentifiedImageError):
            raise HTTPException(415, f"the upload is not an image: send a {FORMATS} file") from e
        raise HTTPException(422, f"the image could not be decoded ({e}); it may be truncated or corrupt: "
                                 f"send a complete {FORMATS} file") from e


def parse_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise HTTPException(422, f"{name} must be an integer, got {value!r}") from None


def check_route(route: str) -> str:
    if route not in ("auto", "none"):
        raise HTTPException(422, f"route must be 'auto' or 'none', got {route!r}")
    return route


def check_category(category: str | None, state: ServiceState) -> str | None:
    if not category:
        return None
    known = [c for c, _ in state.facets().categories]
    if category not in known:
        shown = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
        raise HTTPException(422, f"unknown category {category!r}: use one of {shown}")
    return category


@dataclass
class PhotoQuery:
    image: Image.Image
    k: int
    category: str | None
    route: str
    spec: FilterSpec | None


async def photo_query_from_form(form: FormData, state: ServiceState) -> PhotoQuery:
    """Validate the multipart fields and decode the image (in a thread: decoding is CPU work)."""
    settings = state.settings
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise HTTPException(422, "missing the 'image' file field: send the photo as multipart/form-data "
                                 "with a file field named 'image'")
    k = check_k(parse_int(_text(form, "k"), "k"), settings)
    route = check_route(_text(form, "route") or "auto")
    category = check_category(_text(form, "category"), state)
    spec = parse_filters(_texts(form, "filter"), _texts(form, "exclude"), _texts(form, "max_per"))
    data = await upload.read(settings.max_upload_bytes + 1)
    t0 = time.perf_counter()
    image = await run_in_threadpool(decode_image, data, settings)
    state.metrics.observe_stage("decode", time.perf_counter() - t0)
    return PhotoQuery(image, k, category, route, spec)


def _text(form: FormData, name: str) -> str | None:
    v = form.get(name)
    return v.strip() if isinstance(v, str) else None


def _texts(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v.strip()]


async def run_photo_search(rec: Recommender, state: ServiceState, q: PhotoQuery) -> SearchResult:
    # every input was validated above: an error from here on is the server's (a 500), not the client's
    result = await run_in_threadpool(rec.search, q.image, q.k, q.spec, q.category, q.route)
    for stage, seconds in result.timings.items():
        state.metrics.observe_stage(stage, seconds)
    return result


async def fetch_image_url(url: str, settings: Settings) -> bytes:
    if not settings.allow_image_urls:
        raise HTTPException(422, "image_url is disabled on this server: upload the photo as multipart/form-data, "
                                 "or start the server with LOOKALIKE_ALLOW_IMAGE_URLS=true")
    return await download_image(url, settings)


async def download_image(url: str, settings: Settings) -> bytes:
    """GET an http(s) image URL: capped in bytes and time, never a local file; each failure is a 422/413."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HTTPException(422, f"image_url must be an absolute http:// or https:// URL, got {url!r}")
    cap = settings.max_upload_bytes

    async def fetch() -> bytes:
        async with (httpx.AsyncClient(timeout=settings.image_url_timeout, follow_redirects=True,
                                      max_redirects=3, trust_env=False) as client,
                    client.stream("GET", url) as resp):
            if resp.status_code != 200:
                raise HTTPException(422, f"image_url answered HTTP {resp.status_code}: give a URL that "
                                         "serves the image directly")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise too_large(f"the image at image_url ({declared} bytes)", cap)
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > cap:
                    raise too_large("the image at image_url", cap)
            return bytes(body)

    try:
        return await asyncio.wait_for(fetch(), timeout=settings.image_url_timeout)
    except TimeoutError:
        raise HTTPException(422, f"image_url did not deliver the image within {settings.image_url_timeout:g}s "
                                 "(LOOKALIKE_IMAGE_URL_TIMEOUT)") from None
    except httpx.HTTPError as e:
        raise HTTPException(422, f"could not fetch image_url: {type(e).__name__}: {e or 'connection failed'}") from e


async def search_json(body: SearchJSON, rec: Recommender, state: ServiceState) -> bytes:
    settings = state.settings
    k = check_k(body.k, settings)
    spec = parse_filters(body.filter, body.exclude, body.max_per)
    if (body.image_url is None) == (body.positive is None):
        raise HTTPException(422, "give exactly one of image_url (a photo to fetch) or positive (product ids)")
    if body.positive is not None:
        if not body.positive:
            raise HTTPException(422, "positive is empty: give at least one product id")
        try:
            recs = await run_in_threadpool(rec.search_by_ids, body.positive, body.negative, k, spec)
        except UnknownProductError as e:
            raise HTTPException(404, f"no product with id {e.product_id!r}: list ids with GET /api/products") from None
        return state.json_cache.search(None, recs)
    route = check_route(body.route)
    category = check_category(body.category, state)
    assert body.image_url is not None
    data = await fetch_image_url(body.image_url, settings)
    t0 = time.perf_counter()
    image = await run_in_threadpool(decode_image, data, settings)
    state.metrics.observe_stage("decode", time.perf_counter() - t0)
    result = await run_photo_search(rec, state, PhotoQuery(image, k, category, route, spec))
    with state.metrics.time_stage("store"):
        return state.json_cache.search(result.predicted_category, result.items)


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "an id in positive/negative does not exist"},
    413: {"model": ErrorBody, "description": "over LOOKALIKE_MAX_UPLOAD_BYTES or LOOKALIKE_MAX_IMAGE_PIXELS"},
    415: {"model": ErrorBody, "description": "not multipart/JSON, or the file is not an image"},
    422: {"model": ErrorBody, "description": "undecodable image, or a missing/malformed field"},
}


@router.post("/api/search", response_model=SearchResponse, responses=_ERRORS, openapi_extra=SEARCH_REQUEST_BODY)
async def search(request: Request, rec: RecommenderDep, state: StateDep) -> Response:
    """Search by photo (multipart ``image``, or JSON ``image_url``) or by example (JSON ``positive``/``negative``).

    With ``route=auto`` and an encoder that predicts categories, the search stays inside the predicted
    category when it is confident; ``category`` forces one. Status codes: 413 too large, 415 not an image
    or not multipart/JSON, 422 undecodable image or bad field, 404 unknown id.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await read_form(request, state.settings)
        try:
            q = await photo_query_from_form(form, state)
        finally:
            await form.close()
        result = await run_photo_search(rec, state, q)
        with state.metrics.time_stage("store"):  # product rows -> response
            body = state.json_cache.search(result.predicted_category, result.items)
        return JSONBytes(body)
    if ctype == "application/json" or ctype.endswith("+json"):
        return JSONBytes(await search_json(await read_json(request), rec, state))
    raise HTTPException(415, f"unsupported Content-Type {ctype or '(none)'!r}: send multipart/form-data with a file "
                             "field 'image', or application/json with image_url or positive/negative")
