"""The HTTP contract: response and request bodies of the REST API.

Other tools depend on these shapes, so field names are stable. The routes emit the same shapes from plain
dicts and cached JSON fragments (``product_dict``, ``JSONCache``), skipping a per-request model validation
pass; these models document the contract in OpenAPI and validate the request bodies.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from lookalike.store.sql import ProductRow


class Product(BaseModel):
    id: str
    title: str
    category: str | None
    image_url: str | None = Field(description="path of the image on this server (/images/{id}), or null")
    attributes: dict[str, Any]


class Item(BaseModel):
    product: Product
    score: float = Field(description="cosine similarity of the two image vectors")
    similarity_pct: float = Field(description="a 0-100 figure for shoppers, calibrated on the catalogue")


class ProductList(BaseModel):
    data: list[Product]
    count: int = Field(description="how many products match in total (not just this page)")


class ItemList(BaseModel):
    data: list[Item]
    count: int


class PredictedCategory(BaseModel):
    label: str
    confidence: float


class SearchResponse(BaseModel):
    predicted_category: PredictedCategory | None
    data: list[Item]
    count: int


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    products: int | None = None
    encoder: str | None = None
    detail: str | None = None


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong and what to change")


class SearchJSON(BaseModel):
    """JSON body of ``POST /api/search``: exactly one of ``image_url`` or ``positive``."""

    model_config = ConfigDict(extra="forbid")

    image_url: str | None = Field(None, description="http(s) URL of a photo (needs LOOKALIKE_ALLOW_IMAGE_URLS)")
    positive: list[str] | None = Field(None, description="product ids the results should look like")
    negative: list[str] = Field([], description="product ids the results should not look like")
    k: int | None = None
    category: str | None = None
    route: str = "auto"
    filter: list[str] = []
    exclude: list[str] = []
    max_per: list[str] = []


def image_url(row: ProductRow) -> str | None:
    return f"/images/{quote(row.id, safe='')}" if row.image else None


def product_dict(row: ProductRow) -> dict[str, Any]:
    return {"id": row.id, "title": row.title, "category": row.category, "image_url": image_url(row),
            "attributes": row.attributes}


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


class _Scored(Protocol):
    product: ProductRow
    score: float
    similarity_pct: float


class JSONCache:
    """Each product's JSON, encoded once and reused in every list it appears in.

    Building and encoding the dicts of ten products cost several times more than finding them, so the hot
    routes splice these cached fragments instead. An entry is valid while the Recommender still holds the
    very same row object; an updated product (a new row) is re-encoded on its next use.
    """

    def __init__(self) -> None:
        self._products: dict[str, tuple[ProductRow, bytes]] = {}

    def product(self, row: ProductRow) -> bytes:
        hit = self._products.get(row.id)
        if hit is not None and hit[0] is row:
            return hit[1]
        data = dumps(product_dict(row))
        self._products[row.id] = (row, data)
        return data

    def items(self, recs: Sequence[_Scored]) -> bytes:
        """``{"data": [item...], "count": n}`` as bytes."""
        parts = [b'{"product":%b,"score":%.6f,"similarity_pct":%.1f}'
                 % (self.product(r.product), _finite(r.score), _finite(r.similarity_pct)) for r in recs]
        return b'{"data":[' + b",".join(parts) + b'],"count":' + str(len(parts)).encode() + b"}"

    def search(self, predicted: tuple[str, float] | None, recs: Sequence[_Scored]) -> bytes:
        pred = dumps({"label": predicted[0], "confidence": round(float(predicted[1]), 4)}) if predicted else b"null"
        return b'{"predicted_category":' + pred + b"," + self.items(recs)[1:]


# OpenAPI description of the two request bodies of POST /api/search (the route parses them itself so it
# can cap the upload size while reading).
SEARCH_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "the photo"},
                        "k": {"type": "integer", "minimum": 1},
                        "category": {"type": "string", "description": "search only inside this category"},
                        "route": {"type": "string", "enum": ["auto", "none"], "default": "auto"},
                        "filter": {"type": "array", "items": {"type": "string"}, "description": "attr:value"},
                        "exclude": {"type": "array", "items": {"type": "string"}, "description": "attr:value"},
                        "max_per": {"type": "array", "items": {"type": "string"}, "description": "attr:n"},
                    },
                }
            },
            "application/json": {"schema": SearchJSON.model_json_schema()},
        },
    }
}
