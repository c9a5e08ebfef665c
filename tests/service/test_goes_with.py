"""GET /api/products/{id}/goes-with and the "Goes with" section of the product page."""
from __future__ import annotations

import re
from urllib.parse import quote

from fastapi.testclient import TestClient

from lookalike.recommender import Recommender

SHAPES = {"circle", "square", "triangle", "stripe"}


def test_goes_with_returns_items_of_the_target_category(client: TestClient) -> None:
    r = client.get("/api/products/p0000/goes-with", params={"category": "square", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 5 == len(body["data"])
    assert set(body["data"][0]) == {"product", "score", "similarity_pct"}  # the /similar item shape
    assert all(it["product"]["category"] == "square" for it in body["data"])
    assert "p0000" not in {it["product"]["id"] for it in body["data"]}
    scores = [it["score"] for it in body["data"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= it["similarity_pct"] <= 100 for it in body["data"])


def test_goes_with_matches_the_python_api(client: TestClient, recommender: Recommender) -> None:
    r = client.get("/api/products/p0001/goes-with", params={"category": "triangle", "k": 4})
    api = [it["product"]["id"] for it in r.json()["data"]]
    assert api == [x.product.id for x in recommender.goes_with("p0001", "triangle", k=4)]


def test_goes_with_errors_say_what_to_fix(client: TestClient, odd_id: str) -> None:
    r = client.get("/api/products/nope/goes-with", params={"category": "square"})
    assert r.status_code == 404 and "no product with id 'nope'" in r.json()["detail"]
    r = client.get("/api/products/p0000/goes-with", params={"category": "sofa"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "'sofa'" in detail and all(f"'{s}'" in detail for s in SHAPES)
    r = client.get("/api/products/p0000/goes-with")
    assert r.status_code == 422 and "'category' is required" in r.json()["detail"]
    r = client.get("/api/products/p0000/goes-with", params={"category": "square", "k": 0})
    assert r.status_code == 422 and "k must be between" in r.json()["detail"]
    r = client.get("/api/products/p0000/goes-with", params={"category": "square", "recipe": "learned"})
    assert r.status_code == 422 and "--fit" in r.json()["detail"]
    r = client.get("/api/products/p0000/goes-with", params={"category": "square", "recipe": "magic"})
    assert r.status_code == 422 and "Valid goes-with recipes" in r.json()["detail"]
    # an id that needs URL-encoding still routes to goes-with, not to the product lookup
    r = client.get(f"/api/products/{quote(odd_id, safe='')}/goes-with", params={"category": "circle", "k": 2})
    assert r.status_code == 200 and r.json()["count"] == 2


def test_product_page_shows_goes_with_sections(client: TestClient) -> None:
    r = client.get("/product/p0002")
    assert r.status_code == 200
    html = r.text
    section = html[html.index('id="goes-with"'):]
    groups = re.findall(r'class="goes-with-group" data-category="([^"]+)"', section)
    assert len(groups) == 3 and set(groups) <= SHAPES - {"triangle"}  # p0002 is a triangle
    assert len(re.findall(r'<a class="card" href="/product/', section)) == 12
    assert "% similar" not in section  # goes-with items are matches, not look-alikes
