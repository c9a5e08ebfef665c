"""``POST /api/events``: impressions, clicks and adds to cart from the similar-products carousel.

Events are stored (table ``events``) and folded into the click statistics that re-rank similar lists
(recommend/rerank.py) as soon as they are accepted; other processes serving the same store fold them in on
their next poll (live/event_feed.py). The body is one event or a JSON array of up to
``MAX_BATCH`` (a carousel reports its impressions in one request). Shoppers' browsers send these, so no
write key is needed; with LOOKALIKE_REQUIRE_KEY_FOR_READS the read key is.
"""
from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.responses import Response

from lookalike.recommender import Recommender
from lookalike.service.deps import get_recommender
from lookalike.service.routes.product_writes import read_json_body
from lookalike.service.routes.products import JSONBytes
from lookalike.service.schemas import ErrorBody
from lookalike.store.tables import Event

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

MAX_BATCH = 200


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["impression", "click", "add_to_cart"]
    product_id: str = Field(min_length=1, max_length=128, description="the product shown or clicked")
    source_product_id: str | None = Field(None, max_length=128,
                                          description="the product whose similar list showed it")
    position: int | None = Field(None, ge=0, le=10_000, description="slot in that list, 0 = first")


_BODY = TypeAdapter(EventIn | list[EventIn])


def store_events(rec: Recommender, events: list[EventIn]) -> None:
    """One transaction for the batch, then the in-memory statistics (so a failed commit counts nothing)."""
    with rec.store.session() as s, s.begin():
        rows = [Event(type=e.type, product_id=e.product_id, source_product_id=e.source_product_id,
                      position=e.position) for e in events]
        s.add_all(rows)
        s.flush()
        if rec.event_feed is not None:  # counted here, so the feed must not fold them in again
            rec.event_feed.own([r.id for r in rows])
    for e in events:
        rec.feedback.add(e.type, e.product_id, e.source_product_id, e.position)


@router.post("/api/events", status_code=202, responses={
    404: {"model": ErrorBody, "description": "an unknown product_id or source_product_id"},
    422: {"model": ErrorBody, "description": "a malformed event"}})
async def post_events(request: Request) -> Response:
    """Record ``{"type": "impression"|"click"|"add_to_cart", "product_id", "source_product_id", "position"}``
    (or an array of them); answers 202 with how many were accepted."""
    rec = await get_recommender(request)
    try:
        body = _BODY.validate_python(await read_json_body(request))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:5])
        raise HTTPException(422, f"bad event: {errs}. Send {{\"type\": \"impression\"|\"click\"|\"add_to_cart\", "
                                 "\"product_id\": ..., \"source_product_id\": ..., \"position\": 0}") from e
    events = body if isinstance(body, list) else [body]
    if not events:
        raise HTTPException(422, "the event array is empty: send at least one event")
    if len(events) > MAX_BATCH:
        raise HTTPException(422, f"{len(events)} events in one request; send at most {MAX_BATCH}")
    for e in events:
        for pid in (e.product_id, e.source_product_id):
            if pid is not None and pid not in rec.products:
                raise HTTPException(404, f"no product with id {pid!r}: events must name catalogue products")
    await run_in_threadpool(store_events, rec, events)
    return JSONBytes({"accepted": len(events)}, status_code=202)
