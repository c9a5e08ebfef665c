"""The HTTP contract: response and request bodies of the REST API.

Other tools depend on these shapes, so field names are stable. The hot routes build the same shapes as
plain dicts (see ``product_dict``/``item_dict``) and serialise them directly, skipping per-request model
validation; these models document the contract in OpenAPI and validate the request bodies.
"""
from __future__ import annotations

from typing import Any, Literal
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


def item_dict(product: dict[str, Any], score: float, similarity_pct: float) -> dict[str, Any]:
    return {"product": product, "score": round(float(score), 6), "similarity_pct": round(float(similarity_pct), 1)}


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
