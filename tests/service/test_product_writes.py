"""POST/PATCH/DELETE /api/products: keys, validation, and each change visible to reads at once."""
from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lookalike.demo import COLOURS, draw_product
from lookalike.recommender import Recommender
from lookalike.service.app import create_app
from lookalike.service.security import hash_key
from lookalike.settings import Settings

KEY = "test-key-123"


def shape_png(shape: str = "circle", colour: str = "Red", seed: int = 7) -> bytes:
    buf = io.BytesIO()
    draw_product(shape, COLOURS[colour], np.random.default_rng(seed)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def writable(workspace: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """make(**settings) -> a client over a private copy of the service workspace (writes never leak)."""
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    rec = Recommender.open(ws, settings=Settings(workspace=ws))
    opened: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = Settings(workspace=ws, **{"api_keys": [hash_key(KEY)], **overrides})
        client = TestClient(create_app(settings, recommender=rec))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def post(client: TestClient, product: dict, image: bytes | None = None, key: str | None = KEY):  # type: ignore[no-untyped-def]
    headers = {"X-API-Key": key} if key else {}
    if image is None:  # no file: the JSON body, with an image_url or without
        return client.post("/api/products", json=product, headers=headers)
    files = {"image": ("x.png", image, "image/png")}
    return client.post("/api/products", data={"product": json.dumps(product)}, files=files, headers=headers)


def similar_ids(client: TestClient, pid: str, **params: str) -> list[str]:
    r = client.get(f"/api/products/{pid}/similar", params={"k": "10", "rerank": "none", **params})
    assert r.status_code == 200, r.text
    return [it["product"]["id"] for it in r.json()["data"]]


def test_writes_refused_without_a_valid_key(writable: Callable[..., TestClient]) -> None:
    client = writable()
    prod = {"id": "k1", "title": "t", "category": "circle"}
    r = post(client, prod, shape_png(), key=None)
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert post(client, prod, shape_png(), key="wrong").status_code == 403
    assert client.patch("/api/products/p0000", json={"title": "x"}).status_code == 401
    assert client.delete("/api/products/p0000", headers={"X-API-Key": "nope"}).status_code == 403
    assert client.get("/api/products/k1").status_code == 404
    assert client.get("/api/products/p0000").json()["title"] != "x"
    # no keys configured: writes are off, even with a key
    off = writable(api_keys=[])
    r = off.delete("/api/products/p0000", headers={"X-API-Key": KEY})
    assert r.status_code == 403 and "LOOKALIKE_API_KEYS" in r.json()["detail"]
    # reads stay open by default, and can be closed
    assert client.get("/api/products/p0000").status_code == 200
    closed = writable(require_key_for_reads=True)
    assert closed.get("/api/products/p0000").status_code == 401
    assert closed.get("/api/products/p0000", headers={"X-API-Key": KEY}).status_code == 200
    assert closed.get("/health").status_code == 200


def test_add_shows_everywhere_at_once(writable: Callable[..., TestClient]) -> None:
    client = writable()
    r = post(client, {"id": "new/1", "title": "New red circle", "category": "circle",
                      "attributes": {"colour": "Red", "gender": "Women", "price": "5"}}, shape_png())
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == "new/1" and body["image_url"] and body["lists_changed"] >= 2
    own = similar_ids(client, "new/1")
    assert len(own) == 10
    holders = [p for p in own if "new/1" in similar_ids(client, p)]
    assert holders, "the new product must enter the lists of its nearest neighbours"
    img = client.get(body["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert client.get("/api/products", params={"price": "5"}).json()["count"] == 1
    assert post(client, {"id": "new/1", "category": "circle"}, shape_png()).status_code == 409


def test_patch_applies_to_filters_at_once(writable: Callable[..., TestClient]) -> None:
    client = writable()
    first = similar_ids(client, "p0000")[0]
    r = client.patch(f"/api/products/{first}", json={"attributes": {"in_stock": False}}, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["attributes"]["in_stock"] is False
    assert first not in similar_ids(client, "p0000", exclude="in_stock:False")
    assert client.get("/api/products", params={"in_stock": "False"}).json()["count"] == 1
    r = client.patch("/api/products/nope", json={"title": "x"}, headers={"X-API-Key": KEY})
    assert r.status_code == 404
    r = client.patch(f"/api/products/{first}", json={"colour": "Red"}, headers={"X-API-Key": KEY})
    assert r.status_code == 422 and "colour" in r.json()["detail"]


def test_delete_vanishes_at_once(writable: Callable[..., TestClient]) -> None:
    client = writable()
    victim = similar_ids(client, "p0000")[0]
    r = client.delete(f"/api/products/{victim}", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert client.get(f"/api/products/{victim}").status_code == 404
    assert client.get(f"/api/products/{victim}/similar").status_code == 404
    ids = [p["id"] for p in client.get("/api/products", params={"limit": 200}).json()["data"]]
    assert victim not in ids
    for pid in ids:
        assert victim not in similar_ids(client, pid)
    assert client.delete(f"/api/products/{victim}", headers={"X-API-Key": KEY}).status_code == 404


@pytest.mark.parametrize(("product", "image", "status", "words"), [
    ({"id": "b1", "category": "circle"}, b"not an image at all", 415, "not an image"),
    ({"id": "b2", "category": "circle"}, None, 422, "needs an image"),
    ({"title": "no id"}, b"", 422, "id"),
    ({"id": "b3", "image_url": "file:///etc/passwd"}, None, 422, "http"),
    ({"id": "b4", "image_url": "ftp://example.com/a.png"}, None, 422, "http"),
])
def test_bad_posts_get_4xx_that_say_what_to_fix(writable: Callable[..., TestClient], product: dict,
                                               image: bytes | None, status: int, words: str) -> None:
    client = writable()
    r = post(client, product, image)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_oversized_image_is_refused(writable: Callable[..., TestClient]) -> None:
    client = writable(max_image_pixels=32 * 32)
    r = post(client, {"id": "big", "category": "circle"}, shape_png())
    assert r.status_code == 413 and "LOOKALIKE_MAX_IMAGE_PIXELS" in r.json()["detail"]


def test_cors_is_off_by_default_and_configurable(writable: Callable[..., TestClient]) -> None:
    preflight = {"Origin": "https://shop.example", "Access-Control-Request-Method": "PATCH",
                 "Access-Control-Request-Headers": "x-api-key,content-type"}
    r = writable().options("/api/products/p0000", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = writable(cors_origins=["https://shop.example"]).options("/api/products/p0000", headers=preflight)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://shop.example"
    assert "PATCH" in r.headers["access-control-allow-methods"]


def test_several_workers_write_only_when_they_follow(writable: Callable[..., TestClient]) -> None:
    r = writable(workers=2, follow_writes=False).delete("/api/products/p0000", headers={"X-API-Key": KEY})
    assert r.status_code == 409 and "LOOKALIKE_FOLLOW_WRITES" in r.json()["detail"]
    client = writable(workers=2)  # following by default: each worker replays the others' writes
    assert client.app.state.lookalike.follower is not None
    assert client.delete("/api/products/p0000", headers={"X-API-Key": KEY}).status_code == 200
