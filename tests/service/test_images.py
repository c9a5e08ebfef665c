"""GET /images/{id}: serves catalogue images by product id, and nothing else."""
from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient


def test_serves_the_catalogue_image(client: TestClient, catalogue_dir: Path) -> None:
    r = client.get("/images/p0003")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.content == (catalogue_dir / "images" / "p0003.png").read_bytes()
    # the API's image_url points here
    url = client.get("/api/products/p0003").json()["image_url"]
    assert client.get(url).content == r.content


def test_unknown_product_is_404(client: TestClient) -> None:
    r = client.get("/images/nope")
    assert r.status_code == 404
    assert r.json() == {"detail": "no product with id 'nope'"}


def test_no_path_escapes_the_catalogue(client: TestClient) -> None:
    attempts = [
        "/images/../../etc/passwd",
        "/images/..%2F..%2Fetc%2Fpasswd",
        "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/images/%2Fetc%2Fpasswd",
        "/images/..%5C..%5Cetc%5Cpasswd",
        "/images/catalogue.csv",
        "/images/images%2Fp0001.png",
        "/images/p0001%00.png",
        "/images/~root",
    ]
    for path in attempts:
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"root:" not in r.content, path
        assert r.headers["content-type"] == "application/json", path
