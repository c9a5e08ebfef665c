"""``POST/PATCH/DELETE /api/products``: change the catalogue while the service runs (API key required).

POST takes either multipart/form-data with a ``product`` field (the product JSON) and an ``image`` file, or
JSON (or the same form without the file) whose ``image_url`` the server fetches: http(s) only, capped at
LOOKALIKE_MAX_UPLOAD_BYTES and LOOKALIKE_MAX_IMAGE_PIXELS, redirects at most 3, no proxy from the
environment, never a local file. Every 2xx is committed to the store before it is sent (see live/updater.py).

Where images go: a fetched URL is cached under ``<workspace>/images/`` exactly as ingest caches catalogue
URLs. An upload is given the URL ``http://uploads.lookalike.invalid/<hash><ext>`` (a reserved domain that
never resolves) and cached the same way, so every later stage finds it through ``resolve_image_path``.
"""
from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.responses import Response

from lookalike.catalogue.ingest import MAX_ID_LENGTH, url_cache_name
from lookalike.imaging import content_hash
from lookalike.io_utils import atomic_write
from lookalike.live.index_sync import index_behind
from lookalike.live.updater import ProductExistsError, close_updater, updater_for
from lookalike.recommender import Recommender, UnknownProductError
from lookalike.service.deps import ServiceState, get_recommender
from lookalike.service.routes.products import JSONBytes
from lookalike.service.routes.search import (
    BodyTooLarge,
    capped_stream,
    decode_image,
    download_image,
    read_form,
    too_large,
)
from lookalike.service.schemas import ErrorBody, dumps, product_dict
from lookalike.service.security import require_write_key
from lookalike.settings import Settings
from lookalike.store.sql import ProductRow

log = logging.getLogger(__name__)


UPLOAD_HOST = "uploads.lookalike.invalid"
MAX_JSON_BYTES = 256 * 1024
FORM_OVERHEAD = 300 * 1024
SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
Scalar = str | int | float | bool | None


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f]+$")
    title: str = ""
    category: str | None = None
    attributes: dict[str, Scalar] = {}
    image_url: str | None = Field(None, description="http(s) URL the server fetches, when no file is uploaded")


class ProductPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    category: str | None = None
    attributes: dict[str, Scalar] = Field({}, description="merged into the product's; a null value removes it")
    replace_attributes: bool = Field(False, description="replace all attributes instead of merging")


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Resume an index sync a crash interrupted, once the workspace is loaded; checkpoint at shutdown."""
    stop = threading.Event()

    def resume() -> None:
        state: ServiceState = app.state.lookalike
        while not stop.is_set() and state.recommender is None and state.load_error is None:
            stop.wait(0.2)
        rec = state.recommender
        if rec is not None and not stop.is_set() and index_behind(rec.workspace.root, rec.store, rec.encoder_name):
            updater_for(rec, state.settings)

    threading.Thread(target=resume, name="lookalike-live-resume", daemon=True).start()
    yield
    stop.set()
    rec = app.state.lookalike.recommender
    if rec is not None:
        await anyio.to_thread.run_sync(close_updater, rec)


router = APIRouter(prefix="/api/products", tags=["products (write)"], dependencies=[Depends(require_write_key)],
                   lifespan=lifespan)


def writable_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.lookalike
    if state.settings.workers > 1 and not state.follows_writes:
        # each worker process holds its own copy of the catalogue: a write would reach only one of them
        raise HTTPException(409, f"live catalogue writes with {state.settings.workers} workers need "
                                 "LOOKALIKE_FOLLOW_WRITES=true (or unset), so every worker replays them")
    return state


def changed(state: ServiceState) -> None:
    state.drop_listing()


# ---- request parsing ----------------------------------------------------------------------------
def _bad(e: ValidationError, what: str) -> HTTPException:
    errs = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors())
    return HTTPException(422, f"bad {what}: {errs}")


async def read_json_body(request: Request) -> Any:
    body = bytearray()
    try:
        async for chunk in capped_stream(request, MAX_JSON_BYTES):
            body += chunk
    except BodyTooLarge:
        raise HTTPException(413, f"the JSON body is over {MAX_JSON_BYTES} bytes") from None
    try:
        return json.loads(body)
    except ValueError as e:
        raise HTTPException(422, f"the body is not valid JSON: {e}") from e


async def fetch_image(url: str, settings: Settings) -> bytes:
    if not settings.allow_product_image_urls:
        raise HTTPException(422, "image_url is disabled on this server (LOOKALIKE_ALLOW_PRODUCT_IMAGE_URLS): "
                                 "upload the image as a multipart file field 'image'")
    return await download_image(url, settings)


async def parse_post(request: Request, settings: Settings) -> tuple[ProductIn, bytes]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: bytes | None = None
    if ctype == "multipart/form-data":
        form = await read_form(request, settings, FORM_OVERHEAD, max_fields=8,
                               hint="Send a 'product' field (JSON) and an 'image' file")
        try:
            raw = form.get("product")
            if not isinstance(raw, str):
                raise HTTPException(422, "missing the 'product' field: send the product JSON "
                                         '({"id": ..., "title": ..., "category": ..., "attributes": {...}}) in a '
                                         "form field named 'product'")
            try:
                body: Any = json.loads(raw)
            except ValueError as e:
                raise HTTPException(422, f"the 'product' field is not valid JSON: {e}") from e
            upload = form.get("image")
            if isinstance(upload, UploadFile):
                data = await upload.read(settings.max_upload_bytes + 1)
                if len(data) > settings.max_upload_bytes:
                    raise too_large("the image", settings.max_upload_bytes)
        finally:
            await form.close()
    elif ctype == "application/json" or ctype.endswith("+json"):
        body = await read_json_body(request)
    else:
        raise HTTPException(415, f"unsupported Content-Type {ctype or '(none)'!r}: send multipart/form-data with "
                                 "'product' (JSON) and 'image' (file), or JSON with an image_url")
    try:
        product = ProductIn.model_validate(body)
    except ValidationError as e:
        raise _bad(e, "product") from e
    if data is None:
        if not product.image_url:
            raise HTTPException(422, "the product needs an image: upload a file field 'image' or give image_url")
        data = await fetch_image(product.image_url, settings)
    return product, data


def store_image(rec: Recommender, data: bytes, image: Image.Image | None, url: str | None) -> tuple[str, str]:
    """Write the image into the workspace cache; returns (the product's image field, its content hash)."""
    digest = content_hash(data)
    if url is None:
        fmt = Image.open(io.BytesIO(data)).format or ""
        url = f"http://{UPLOAD_HOST}/{digest}{SUFFIX.get(fmt, '')}"
    dest = rec.workspace.root / "images" / url_cache_name(url)
    if not dest.exists():
        atomic_write(dest, lambda p: p.write_bytes(data))
    return url, digest


# ---- routes -------------------------------------------------------------------------------------
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no X-API-Key header"},
    403: {"model": ErrorBody, "description": "the key is wrong, or no keys are configured"},
    404: {"model": ErrorBody, "description": "no product with this id"},
    409: {"model": ErrorBody, "description": "a product with this id already exists (use PATCH)"},
    413: {"model": ErrorBody, "description": "over LOOKALIKE_MAX_UPLOAD_BYTES or LOOKALIKE_MAX_IMAGE_PIXELS"},
    415: {"model": ErrorBody, "description": "not multipart/JSON, or the file is not an image"},
    422: {"model": ErrorBody, "description": "a malformed field or an undecodable image"},
}


@router.post("", status_code=201, responses=_ERRORS)
async def create_product(request: Request) -> Response:
    """Add a product: it is embedded, indexed, given its own similar list and entered into the lists of the
    products it now belongs to, before the response is sent."""
    rec = await get_recommender(request)
    state = writable_state(request)
    product, data = await parse_post(request, state.settings)
    if product.id in rec.products:
        raise HTTPException(409, f"product {product.id!r} already exists: change it with PATCH "
                                 f"/api/products/{{id}} or DELETE it first")
    image = await run_in_threadpool(decode_image, data, state.settings)
    up = await run_in_threadpool(updater_for, rec, state.settings)
    vector = await run_in_threadpool(up.embed, [image])
    stored, digest = await run_in_threadpool(store_image, rec, data, image, product.image_url)
    row = ProductRow(product.id, product.title, product.category, stored, digest, dict(product.attributes))
    try:
        change = await run_in_threadpool(up.add, row, vector[0])
    except ProductExistsError:
        raise HTTPException(409, f"product {product.id!r} already exists: change it with PATCH") from None
    changed(state)
    return JSONBytes(dumps({**product_dict(row), "lists_changed": change.lists_changed}), status_code=201)


@router.patch("/{product_id:path}", responses=_ERRORS)
async def patch_product(product_id: str, request: Request) -> Response:
    """Change title, category or attributes; filters see the change at once; nothing is re-embedded."""
    rec = await get_recommender(request)
    state = writable_state(request)
    try:
        patch = ProductPatch.model_validate(await read_json_body(request))
    except ValidationError as e:
        raise _bad(e, "patch") from e
    up = await run_in_threadpool(updater_for, rec, state.settings)
    try:
        row = await run_in_threadpool(up.update, product_id, patch.title, patch.category, patch.attributes,
                                      patch.replace_attributes)
    except UnknownProductError:
        raise HTTPException(404, f"no product with id {product_id!r}: list ids with GET /api/products") from None
    changed(state)
    return JSONBytes(state.json_cache.product(row))


@router.delete("/{product_id:path}", responses=_ERRORS)
async def delete_product(product_id: str, request: Request) -> Response:
    """Withdraw a product: it leaves every similar list at once and never shows in results again."""
    rec = await get_recommender(request)
    state = writable_state(request)
    up = await run_in_threadpool(updater_for, rec, state.settings)
    try:
        change = await run_in_threadpool(up.delete, product_id)
    except UnknownProductError:
        raise HTTPException(404, f"no product with id {product_id!r}: list ids with GET /api/products") from None
    changed(state)
    return JSONBytes({"id": product_id, "deleted": True, "lists_changed": change.lists_changed})
