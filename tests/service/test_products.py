"""GET /api/products, /api/products/{id} and /api/products/{id}/similar: shapes, filters and every error."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from urllib.parse import quote

from fastapi.testclient import TestClient

PRODUCT_KEYS = {"id", "title", "category", "image_url", "attributes"}


def test_list_products_shape_and_paging(client: TestClient, n_products: int) -> None:
    r = client.get("/api/products", params={"limit": 7, "offset": 0})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"data", "count"}
    assert body["count"] == n_products
    assert len(body["data"]) == 7
    first = body["data"][0]
    assert set(first) == PRODUCT_KEYS
    assert first["image_url"] == "/images/" + quote(first["id"], safe="")
    assert set(first["attributes"]) >= {"colour", "gender"}
    page2 = client.get("/api/products", params={"limit": 7, "offset": 7}).json()["data"]
    assert not {p["id"] for p in body["data"]} & {p["id"] for p in page2}
    last = client.get("/api/products", params={"limit": 200, "offset": n_products - 3}).json()
    assert len(last["data"]) == 3 and last["count"] == n_products


def test_list_products_filters(client: TestClient) -> None:
    by_cat = client.get("/api/products", params={"category": "circle", "limit": 200}).json()
    assert by_cat["count"] == 15 and {p["category"] for p in by_cat["data"]} == {"circle"}
    attrs = client.get("/api/products", params={"colour": "Red", "gender": "Women", "limit": 200}).json()
    assert attrs["count"] > 0
    assert all(p["attributes"]["colour"] == "Red" and p["attributes"]["gender"] == "Women" for p in attrs["data"])
    titled = client.get("/api/products", params={"q": "blue square"}).json()
    assert titled["count"] > 0
    assert all("blue" in p["title"].lower() and "square" in p["title"].lower() for p in titled["data"])
    none = client.get("/api/products", params={"colour": "Orange"}).json()
    assert none == {"data": [], "count": 0}


def test_list_products_errors(client: TestClient) -> None:
    r = client.get("/api/products", params={"limit": 0})
    assert r.status_code == 422
    assert r.json()["detail"] == "query parameter 'limit': Input should be greater than or equal to 1 (got '0')"
    r = client.get("/api/products", params={"limit": 201})
    assert r.status_code == 422 and "less than or equal to 200" in r.json()["detail"]
    r = client.get("/api/products", params={"offset": "x"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("query parameter 'offset': Input should be a valid integer")
    r = client.get("/api/products", params={"colr": "Red"})
    assert r.status_code == 422
    assert r.json()["detail"] == ("unknown attribute filter 'colr': filter with limit, offset, category, q or one "
                                  "of the attributes ['colour', 'gender', 'price']")


def test_get_product(client: TestClient) -> None:
    r = client.get("/api/products/p0001")
    assert r.status_code == 200
    p = r.json()
    assert set(p) == PRODUCT_KEYS and p["id"] == "p0001" and p["category"] == "square"
    r = client.get("/api/products/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "no product with id 'nope': list ids with GET /api/products"}


def test_similar_default_and_k(client: TestClient) -> None:
    r = client.get("/api/products/p0000/similar")
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == len(body["data"]) == 10  # LOOKALIKE_DEFAULT_K
    item = body["data"][0]
    assert set(item) == {"product", "score", "similarity_pct"} and set(item["product"]) == PRODUCT_KEYS
    ids = [it["product"]["id"] for it in body["data"]]
    assert "p0000" not in ids and len(set(ids)) == len(ids)
    scores = [it["score"] for it in body["data"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= it["similarity_pct"] <= 100 for it in body["data"])
    assert client.get("/api/products/p0000/similar", params={"k": 3}).json()["count"] == 3
    # more than the precomputed list holds: answered by a live search
    assert client.get("/api/products/p0000/similar", params={"k": 40}).json()["count"] == 40


def test_similar_k_out_of_range(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_k=25)
    for k in (0, -1, 26):
        r = client.get("/api/products/p0000/similar", params={"k": k})
        assert r.status_code == 422
        assert r.json() == {"detail": f"k must be between 1 and 25 (got {k}); the cap is set by LOOKALIKE_MAX_K"}
    r = client.get("/api/products/p0000/similar", params={"k": "ten"})
    assert r.status_code == 422 and r.json()["detail"].startswith("query parameter 'k': Input should be a valid int")


def test_similar_unknown_id(client: TestClient) -> None:
    r = client.get("/api/products/nope/similar")
    assert r.status_code == 404
    assert r.json() == {"detail": "no product with id 'nope': list ids with GET /api/products"}
    r = client.get("/api/products/nope/similar", params={"filter": "colour:Red"})
    assert r.status_code == 404


def test_similar_filters(client: TestClient) -> None:
    r = client.get("/api/products/p0000/similar", params={"filter": "colour:Blue", "k": 5})
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 5 and {it["product"]["attributes"]["colour"] for it in data} == {"Blue"}
    r = client.get("/api/products/p0000/similar", params=[("filter", "colour:Blue"), ("filter", "colour:Green"),
                                                          ("exclude", "gender:Men"), ("k", "8")])
    data = r.json()["data"]
    assert {it["product"]["attributes"]["colour"] for it in data} <= {"Blue", "Green"}
    assert all(it["product"]["attributes"]["gender"] != "Men" for it in data)
    r = client.get("/api/products/p0000/similar", params={"max_per": "colour:1", "k": 5})
    colours = Counter(it["product"]["attributes"]["colour"] for it in r.json()["data"])
    assert colours and max(colours.values()) == 1
    r = client.get("/api/products/p0000/similar", params={"same_category": "true", "k": 10})
    assert {it["product"]["category"] for it in r.json()["data"]} == {"circle"}


def test_similar_bad_filters(client: TestClient) -> None:
    cases = {
        ("filter", "colour"): "filter 'colour' must be written attr:value, e.g. gender:Women",
        ("exclude", ":Red"): "exclude ':Red' has no attribute name before ':'; write it as attr:value, "
                             "e.g. gender:Women",
        ("max_per", "colour:x"): "max_per 'colour:x' needs a positive whole number after ':', e.g. colour:2",
    }
    for (name, value), detail in cases.items():
        r = client.get("/api/products/p0000/similar", params={name: value})
        assert r.status_code == 422, (name, value)
        assert r.json() == {"detail": detail}
    r = client.get("/api/products/p0000/similar", params={"same_category": "maybe"})
    assert r.status_code == 422 and r.json()["detail"].startswith("query parameter 'same_category'")


def test_ids_that_need_url_encoding(client: TestClient, odd_id: str) -> None:
    quoted = quote(odd_id, safe="")
    r = client.get(f"/api/products/{quoted}")
    assert r.status_code == 200
    p = r.json()
    assert p["id"] == odd_id and p["image_url"] == f"/images/{quoted}"
    r = client.get(f"/api/products/{quoted}/similar", params={"k": 3})
    assert r.status_code == 200 and r.json()["count"] == 3
    assert client.get(p["image_url"]).headers["content-type"] == "image/png"
    r = client.get("/api/products/p0000/similar", params={"k": 60})
    assert odd_id in {it["product"]["id"] for it in r.json()["data"]}
