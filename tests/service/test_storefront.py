"""The storefront pages, rendered without JavaScript: catalogue, product with carousel, photo search."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

from fastapi.testclient import TestClient


class Page(HTMLParser):
    """Collects the tags we assert on: images, links, elements by id and class."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.classes: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        if a.get("id"):
            self.ids.add(a["id"] or "")
        self.classes += (a.get("class") or "").split()


def test_catalogue_page(client: TestClient, n_products: int) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = Page(r.text)
    cards = [h for h in page.links if h.startswith("/product/")]
    assert len(cards) == 24  # one page
    assert f"{n_products} products · page 1 of 3" in r.text
    assert "/?page=2" in page.links
    # every product image has alt text
    product_imgs = [i for i in page.imgs if (i.get("src") or "").startswith("/images/")]
    assert len(product_imgs) == 24 and all(i.get("alt") for i in product_imgs)
    # category and attribute filters derived from the data
    assert '<select id="category" name="category">' in r.text
    for attr in ("colour", "gender", "price"):
        assert f'name="{attr}"' in r.text
    assert '<option value="Women"' in r.text


def test_catalogue_filters_and_pagination(client: TestClient) -> None:
    r = client.get("/", params={"category": "circle", "colour": "Red"})
    page = Page(r.text)
    cards = [h for h in page.links if h.startswith("/product/")]
    assert "3 products" in r.text and len(cards) == 3
    assert '<option value="circle" selected>' in r.text
    r = client.get("/", params={"q": "green", "page": 1})
    assert re.search(r"12 products", r.text)
    r = client.get("/", params={"page": 3})
    assert "page 3 of 3" in r.text and "/?page=2" in Page(r.text).links
    r = client.get("/", params={"q": "no such thing"})
    assert "No product matches these filters." in r.text
    r = client.get("/", params={"unknown": "x"})  # unknown parameters are ignored by the pages
    assert r.status_code == 200
    for odd, shown in (("-1", 1), ("abc", 1), ("0", 1), ("99", 3)):
        r = client.get("/", params={"page": odd})
        assert r.status_code == 200 and f"page {shown} of 3" in r.text, odd


def test_product_page(client: TestClient) -> None:
    r = client.get("/product/p0000")
    assert r.status_code == 200
    page = Page(r.text)
    assert {"similar", "similar-list", "goes-with"} <= page.ids
    assert "Goes with" in r.text
    # the carousel's items carry what its events report: the product, its slot, and the list's source
    cards = re.findall(r'<li data-product="([^"]+)" data-position="(\d+)">\s*<a class="card" href="(/product/[^"]+)"',
                       r.text)
    similar_links = [link for _, _, link in cards]
    assert len(similar_links) == 12 and "/product/p0000" not in similar_links
    assert [int(pos) for _, pos, _ in cards] == list(range(12))
    assert all(link == f"/product/{pid}" for pid, _, link in cards)
    assert '<ul data-source="p0000">' in r.text
    badges = re.findall(r'class="badge"[^>]*>(\d+)% similar<', r.text)
    assert len(badges) == 12 and all(0 <= int(b) <= 100 for b in badges)
    assert all(i.get("alt") for i in page.imgs)
    assert 'tabindex="0" role="region"' in r.text  # the carousel scrolls with the keyboard
    assert "<dt>Colour</dt><dd>Red</dd>" in r.text
    # the first similar product's page renders too
    assert client.get(similar_links[0]).status_code == 200


def test_unknown_product_page_is_404_html(client: TestClient) -> None:
    r = client.get("/product/nope")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no product with id &#39;nope&#39;." in r.text
    r = client.get("/no/such/page", headers={"accept": "text/html"})
    assert r.status_code == 404 and "There is no page at /no/such/page." in r.text


def test_search_page_and_upload(client: TestClient, catalogue_dir: Path) -> None:
    r = client.get("/search")
    assert r.status_code == 200
    assert 'enctype="multipart/form-data"' in r.text and 'type="file"' in r.text
    data = (catalogue_dir / "images" / "p0010.png").read_bytes()
    r = client.post("/search", files={"image": ("x.png", data, "image/png")}, data={"category": ""})
    assert r.status_code == 200
    links = re.findall(r'<li>\s*<a class="card" href="(/product/[^"]+)"', r.text)
    assert links[0] == "/product/p0010" and len(links) == 10
    assert "search-results" in Page(r.text).ids
    r = client.post("/search", files={"image": ("x.png", data, "image/png")}, data={"category": "square"})
    links = re.findall(r'<li>\s*<a class="card" href="(/product/[^"]+)"', r.text)
    squares = client.get("/api/products", params={"category": "square", "limit": 200}).json()["data"]
    assert links and set(links) <= {"/product/" + quote(p["id"]) for p in squares}
    assert '<option value="square" selected>' in r.text


def test_search_page_errors(client: TestClient) -> None:
    r = client.post("/search", files={"image": ("a.txt", b"plain text" * 20, "text/plain")})
    assert r.status_code == 415
    assert 'role="alert"' in r.text and "the upload is not an image" in r.text
    r = client.post("/search", data={"category": ""})
    assert r.status_code == 415 and "multipart/form-data" in r.text


def test_static_files(client: TestClient) -> None:
    css = client.get("/static/style.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "DataTransfer" in js.text
    assert client.get("/static/../app.py").status_code == 404


def test_product_page_with_odd_id(client: TestClient, odd_id: str) -> None:
    r = client.get("/product/" + quote(odd_id))
    assert r.status_code == 200 and "<h1>Purple square</h1>" in r.text
    assert f'src="/images/{quote(odd_id, safe="")}"' in r.text
