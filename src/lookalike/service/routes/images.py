"""``GET /images/{id}``: a product's catalogue image, by product id only.

The client names a product, never a path: the file comes from the product's stored image, resolved by the
Recommender inside the catalogue folder (or the workspace's image cache), so no request can reach any
other file. Ids like ``../../etc/passwd`` are simply unknown products.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from starlette.responses import FileResponse, RedirectResponse, Response

from lookalike.service.deps import RecommenderDep
from lookalike.service.schemas import ErrorBody

router = APIRouter(tags=["images"])

IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
               ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}
_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
          (b"BM", "image/bmp"), (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"))


def media_type(path: Path) -> str | None:
    """The image type from the suffix, else from the first bytes; None when the file is not an image."""
    known = IMAGE_TYPES.get(path.suffix.lower())
    if known:
        return known
    with path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return next((t for magic, t in _MAGIC if head.startswith(magic)), None)


@router.get("/images/{product_id:path}", responses={200: {"content": {"image/*": {}}},
                                                404: {"model": ErrorBody, "description": "no such product or image"}})
def product_image(product_id: str, rec: RecommenderDep) -> Response:
    row = rec.product(product_id)
    if row is None:
        raise HTTPException(404, f"no product with id {product_id!r}")
    path = rec.image_path(product_id)
    if path is None:
        if row.image and row.image.startswith(("http://", "https://")):
            return RedirectResponse(row.image, status_code=307)
        raise HTTPException(404, f"product {product_id!r} has no image file in the catalogue")
    media = media_type(path)
    if media is None:
        # a catalogue row pointing at a non-image file (say, a CSV) is never served
        raise HTTPException(404, f"product {product_id!r} has no image file in the catalogue")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "public, max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})
